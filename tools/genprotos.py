"""Regenerate the Python code of protos/: modules, .pyi stubs, gRPC stubs
and the descriptor set Envoy's grpc_json_transcoder (and grpcurl, buf and the
other languages' generators) read.

The public API, ``gridmesh.v1`` with its descriptor set, goes to
clients/gridmesh/v1 (it ships in gridmesh-client); the demo services'
``gridmesh.demo.v1`` to gen/ (the server's).

    python tools/genprotos.py           # rewrite both
    python tools/genprotos.py --check   # exit 1 if either is out of date
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUTS = {Path("gridmesh/v1"): ROOT / "clients", Path("gridmesh/demo"): ROOT / "gen"}
"""Where each generated package goes (the directory its ``gridmesh/...`` path is under)."""
DESCRIPTOR_SET = Path("gridmesh/v1/gridmesh.pb")
ERROR_DETAILS = "google/rpc/error_details.proto"


def _include_dirs() -> list[str]:
    import google.api  # googleapis-common-protos ships google/api/*.proto

    well_known = resources.files("grpc_tools") / "_proto"
    googleapis = Path(next(iter(google.api.__path__))).parent.parent
    return [str(PROTOS), str(well_known), str(googleapis)]


def generate(out: Path) -> None:
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    package_dir = out / "gridmesh" / "v1"
    package_dir.mkdir(parents=True, exist_ok=True)
    includes = [f"-I{d}" for d in _include_dirs()]
    code = ["grpc_tools.protoc", *includes, f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    # Envoy's descriptor set also holds google.rpc.BadRequest, the detail that
    # names the field of an INVALID_ARGUMENT, so the transcoder can print it as JSON.
    descriptors = ["grpc_tools.protoc", *includes, f"--descriptor_set_out={out / DESCRIPTOR_SET}", "--include_imports"]
    for args in ([*code, *sources], [*descriptors, *sources, ERROR_DETAILS]):
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
    (package_dir / "__init__.py").write_text(
        '"""Generated from protos/gridmesh/v1 by tools/genprotos.py. Do not edit."""\n'
    )


def _differences(a: Path, b: Path) -> list[str]:
    names_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    names_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    diffs = sorted(str(n) for n in names_a ^ names_b)
    for name in sorted(names_a & names_b):
        if not filecmp.cmp(a / name, b / name, shallow=False):
            diffs.append(str(name))
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--check", action="store_true", help="fail if the generated code differs from a fresh generation"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if args.check:
            diffs = [
                str(package / d)
                for package, root in OUTPUTS.items()
                for d in _differences(Path(tmp) / package, root / package)
            ]
            if diffs:
                print("the generated code is out of date; run: python tools/genprotos.py", file=sys.stderr)
                for d in diffs:
                    print(f"  {d}", file=sys.stderr)
                return 1
            return 0
        for package, root in OUTPUTS.items():
            shutil.rmtree(root / package, ignore_errors=True)
            shutil.copytree(Path(tmp) / package, root / package)
    return 0


if __name__ == "__main__":
    sys.exit(main())
