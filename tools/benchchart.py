"""Draw the W2 latency percentiles of every system from bench records.

    python tools/benchchart.py peers.jsonl gridmesh.jsonl -o docs/w2-latency.png

Reads the `RESULT` records (one JSON object per line, the peers' schema) of
`../shared/peers/run.sh` and `gridmesh bench`, takes the median over reps of
p50/p90/p99 of each system/profile's W2 rows, and draws grouped bars.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def w2_percentiles(files: list[Path]) -> dict[str, tuple[float, float, float]]:
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    for file in files:
        for line in file.read_text().splitlines():
            line = line.strip().removeprefix("RESULT ")
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("workload") != "W2" or not record.get("ok"):
                continue
            metrics = record.get("metrics", {})
            if "p50_ms" in metrics:
                runs[f"{record['system']}/{record['profile']}"].append(metrics)
    return {
        name: tuple(statistics.median(m[k] for m in reps) for k in ("p50_ms", "p90_ms", "p99_ms"))  # type: ignore[misc]
        for name, reps in sorted(runs.items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path("w2-latency.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = w2_percentiles(args.files)
    names = list(data)
    width = 0.27
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, label in enumerate(("p50", "p90", "p99")):
        xs = [n + (i - 1) * width for n in range(len(names))]
        ax.bar(xs, [data[name][i] for name in names], width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=15, ha="right")
    ax.set_ylabel("submit → result notice, ms (median of reps)")
    ax.set_title("W2: 500 tasks one at a time, same machine, same session")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
