"""SPEC §3 "A runnable demo … reachable through Envoy too": the demo's
services are started by ``gridmesh up --demo`` and routed (gRPC and
HTTP/JSON) by the generated Envoy config only when the demo is enabled."""

import subprocess

from gridmesh.adapters import pki
from gridmesh.cli import mesh
from gridmesh.config import load_config
from gridmesh.core.access import PeerRole
from gridmesh.edge.envoy import DEMO_SERVICES, build_envoy_config, envoy_binary, render_envoy_config

DEMO_ENV = {"GRIDMESH_DEMO_ENABLED": "true", "GRIDMESH_DEMO_CUSTOMERS_PORT": "15091", "GRIDMESH_ENVOY_PORT": "18080"}


def _parts(config):
    built = build_envoy_config(config)
    hcm = built["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    (transcoder,) = (
        f["typed_config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.grpc_json_transcoder"
    )
    clusters = {c["name"]: c for c in built["static_resources"]["clusters"]}
    paths = [r["match"].get("prefix") or r["match"]["path"] for r in routes]
    return transcoder["services"], paths, clusters


def test_without_the_demo_envoy_neither_routes_nor_transcodes_it():
    services, prefixes, clusters = _parts(load_config({}))
    assert not set(DEMO_SERVICES) & set(services)
    assert not any("demo" in p for p in prefixes) and not any("demo" in c for c in clusters)
    assert not any(c.name.startswith("demo-") for c in mesh.components(load_config({}), 0, {}))


def test_with_the_demo_envoy_transcodes_and_routes_both_services_to_their_ports():
    config = load_config(DEMO_ENV)
    services, prefixes, clusters = _parts(config)
    assert set(DEMO_SERVICES) <= set(services)
    assert "/gridmesh.demo.v1.CustomerService/" in prefixes and "/gridmesh.demo.v1.OrderService/" in prefixes
    assert prefixes.index("/gridmesh.demo.v1.OrderService/") < prefixes.index("/grpc.health.v1.Health/")
    endpoint = clusters["demo-customers"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["port_value"] == 15091
    check = clusters["demo-orders"]["health_checks"][0]["grpc_health_check"]["service_name"]
    assert check == "gridmesh.demo.v1.OrderService"


def test_envoy_accepts_the_config_with_the_demo(tmp_path):
    path = tmp_path / "envoy.yaml"
    config = load_config({**DEMO_ENV, "GRIDMESH_STATE_DIR": str(tmp_path)})
    pki.ensure(config.tls_path, list(PeerRole))  # Envoy reads its certificates at start
    path.write_text(render_envoy_config(config))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_up_with_the_demo_starts_both_services_before_envoy():
    config, env = mesh.with_demo(load_config({}), {"PATH": "/bin"})
    names = [c.name for c in mesh.components(config, 1, env)]
    assert names[-1] == "envoy" and names.index("demo-customers") < names.index("demo-orders") < len(names) - 1
    customers = next(c for c in mesh.components(config, 1, env) if c.name == "demo-customers")
    assert customers.spec.argv[-2:] == ["-m", "gridmesh.demo.customers"]
    assert (customers.spec.env or {})["GRIDMESH_DEMO_ENABLED"] == "true"  # children see the demo too
    assert customers.health_service == "gridmesh.demo.v1.CustomerService"
