"""SPEC §1: every address, credential and prefix is configurable; a wrong
value stops the process with one line naming the key."""

from pathlib import Path

import pytest

from gridmesh.common.errors import ConfigError
from gridmesh.config import load_config


def test_defaults_are_the_spec_addresses():
    config = load_config({})
    assert (config.scheduler.port, config.storekeeper.port, config.eventmanager.port) == (50051, 50052, 50053)
    assert config.worker.base_port == 50061
    assert (config.envoy.port, config.envoy.admin_port) == (8080, 9901)
    assert config.zookeeper.hosts == "127.0.0.1:2181"
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert (config.mysql.host, config.mysql.port, config.rabbitmq.port) == ("127.0.0.1", 3306, 5672)


def test_environment_overrides_sections_and_top_level_fields():
    config = load_config({"GRIDMESH_MYSQL_PORT": "3307", "GRIDMESH_NAMESPACE": "blue", "HOME": "/x"})
    assert config.mysql.port == 3307
    assert config.namespace == "blue"


def test_namespace_prefixes_every_shared_name():
    config = load_config({"GRIDMESH_NAMESPACE": "blue"})
    assert config.database("scheduler") == "blue_gridmesh_scheduler"
    assert config.zk_root == "/blue/gridmesh"
    assert config.topic("task.pending") == "blue.gridmesh.task.pending"
    assert config.prefixed("gridmesh.db-events") == "blue.gridmesh.db-events"
    plain = load_config({})
    assert (plain.database("scheduler"), plain.zk_root, plain.topic("task.pending")) == (
        "gridmesh_scheduler",
        "/gridmesh",
        "gridmesh.task.pending",
    )


def test_file_is_read_and_environment_wins(tmp_path: Path):
    file = tmp_path / "mesh.toml"
    file.write_text('namespace = "green"\n[scheduler]\nport = 6000\n[kafka]\nbootstrap_servers = "kafka:9092"\n')
    config = load_config({"GRIDMESH_SCHEDULER_PORT": "6001"}, file)
    assert config.namespace == "green"
    assert config.scheduler.port == 6001
    assert config.kafka.bootstrap_servers == "kafka:9092"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"GRIDMESH_SCHEDULER_PORT": "abc"}, "GRIDMESH_SCHEDULER_PORT"),
        ({"GRIDMESH_SCHEDULER_PORT": "70000"}, "scheduler.port"),
        ({"GRIDMESH_SCHEDULR_PORT": "1"}, "schedulr_port"),
        ({"GRIDMESH_MYSQL_PASSWD": "x"}, "mysql.passwd"),
        ({"GRIDMESH_NAMESPACE": "Bad Name"}, "namespace"),
        ({"GRIDMESH_WORKER_SLOTS": "0"}, "worker.slots"),
        ({"GRIDMESH_ZOOKEEPER_SERVER_ID": "2"}, "zookeeper.server_id"),  # one host listed
        ({"GRIDMESH_KAFKA_NODE_ID": "1"}, "kafka.cluster_id"),  # a cluster's broker needs its id
        ({"GRIDMESH_KAFKA_NODE_ID": "4", "GRIDMESH_KAFKA_BOOTSTRAP_SERVERS": "a:1,b:1,c:1"}, "kafka.node_id"),
        ({"GRIDMESH_KAFKA_MIN_INSYNC_REPLICAS": "0"}, "kafka.min_insync_replicas"),
    ],
)
def test_wrong_value_or_unknown_key_is_refused_naming_the_key(env, names):
    with pytest.raises(ConfigError) as info:
        load_config(env)
    assert names in info.value.message
    assert "\n" not in info.value.message


def test_unknown_key_in_file_is_refused(tmp_path: Path):
    file = tmp_path / "mesh.toml"
    file.write_text("[envoy]\nadmin = 1\n")
    with pytest.raises(ConfigError, match=r"envoy\.admin"):
        load_config({}, file)


@pytest.mark.parametrize("value", ["[1]", "{ a = 1 }"])
def test_a_list_or_table_where_a_number_belongs_is_refused_naming_the_key(tmp_path: Path, value: str):
    file = tmp_path / "mesh.toml"
    file.write_text(f"[scheduler]\nlease_ttl_s = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config({}, file)
    assert "'scheduler.lease_ttl_s' (GRIDMESH_SCHEDULER_LEASE_TTL_S) must be a number" in info.value.message


def test_missing_or_broken_file_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"GRIDMESH_CONFIG": str(tmp_path / "nope.toml")})
    broken = tmp_path / "broken.toml"
    broken.write_text("[scheduler\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, broken)


def test_a_plaintext_edge_is_allowed_only_on_loopback() -> None:
    assert load_config({"GRIDMESH_ENVOY_PLAINTEXT": "true"}).edge_url == "http://127.0.0.1:8080"
    assert load_config({}).edge_url == "https://127.0.0.1:8080"
    with pytest.raises(ConfigError, match=r"envoy\.plaintext.*loopback.*0\.0\.0\.0"):
        load_config({"GRIDMESH_ENVOY_PLAINTEXT": "true", "GRIDMESH_ENVOY_HOST": "0.0.0.0"})


def test_the_clients_own_variables_are_not_config_keys() -> None:
    env = {"GRIDMESH_API_KEY": "gmk_x", "GRIDMESH_CA_FILE": "/etc/ssl/mesh-ca.crt", "GRIDMESH_NAMESPACE": "blue"}
    assert load_config(env).namespace == "blue"


def test_schedulers_on_several_hosts_are_listed_once_for_all_who_call_them():
    one_host = load_config({"GRIDMESH_SCHEDULER_STANDBY_PORT": "50052"})
    assert one_host.scheduler_addresses == ["127.0.0.1:50051", "127.0.0.1:50052"]
    hosts = load_config(
        {"GRIDMESH_SCHEDULER_ADDRESSES": "10.0.0.2:50051, 10.0.0.3:50051", "GRIDMESH_SCHEDULER_HOST": "10.0.0.3"}
    )
    assert hosts.scheduler_addresses == ["10.0.0.2:50051", "10.0.0.3:50051"]


def test_a_broker_of_a_cluster_is_accepted_with_its_cluster_id_and_controller_port():
    config = load_config(
        {
            "GRIDMESH_KAFKA_BOOTSTRAP_SERVERS": "a:9092,b:9092,c:9092",
            "GRIDMESH_KAFKA_NODE_ID": "3",
            "GRIDMESH_KAFKA_CONTROLLER_PORT": "9093",
            "GRIDMESH_KAFKA_CLUSTER_ID": "AAAAAAAAAAAAAAAAAAAAAA",
        }
    )
    assert config.kafka.node_id == 3
