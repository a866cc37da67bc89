"""The StoreKeeper (SPEC §2 StoreKeeper, §3 "a task's result is stored at
<storage root>/<result_dir>/<task_id>.json (atomic write, fsync)") as a real
gRPC server on a free port, with its index in the real MariaDB at
127.0.0.1:3306 (a database of its own per test, dropped afterwards)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pymysql
import pytest
from grpc import aio

from gridmesh.adapters.mysql import MySQL
from gridmesh.config import MeshConfig, load_config
from gridmesh.core.results import CHUNK_BYTES
from gridmesh.grpc_support.server import shutdown
from gridmesh.storekeeper.app import build_server
from gridmesh.v1 import storekeeper_pb2 as pb
from gridmesh.v1 import storekeeper_pb2_grpc
from tests.conftest import provision_mysql

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MAX_RESULT_BYTES = 6 * 1024 * 1024
RPC_TIMEOUT_S = 10.0


@pytest.fixture
def config(tmp_path: Path) -> Iterator[MeshConfig]:
    config = load_config(
        {
            "GRIDMESH_NAMESPACE": f"t{uuid.uuid4().hex[:10]}",
            "GRIDMESH_STATE_DIR": str(tmp_path / "state"),
            "GRIDMESH_STOREKEEPER_PORT": "0",
            "GRIDMESH_STOREKEEPER_MAX_RESULT_BYTES": str(MAX_RESULT_BYTES),
            # Off here: one client plays both the worker (StoreResult) and a
            # reader (GetResult), which mutual TLS gives different
            # certificates; tests/unit/test_tls.py and tests/e2e/test_security.py test those.
            "GRIDMESH_TLS_ENABLED": "false",
        }
    )
    provision_mysql(config)
    try:
        yield config
    finally:
        MySQL(config.mysql_login("storekeeper"), config.database("storekeeper")).drop_database()


@contextlib.asynccontextmanager
async def storekeeper(config: MeshConfig) -> AsyncIterator[storekeeper_pb2_grpc.StoreKeeperStub]:
    host = build_server(config)
    await host.server.start()
    await host.set_serving(True)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            yield storekeeper_pb2_grpc.StoreKeeperStub(channel)
    finally:
        await shutdown(host, grace_s=1.0)


def _index_rows(config: MeshConfig) -> int:
    with (
        pymysql.connect(**dataclasses.asdict(config.mysql_login("storekeeper"))) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(f"SELECT COUNT(*) FROM `{config.database('storekeeper')}`.results")
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def _files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def _store(stub, task_id: str, result_dir: str, content: bytes, content_type: str = "") -> pb.StoreResultResponse:
    request = pb.StoreResultRequest(task_id=task_id, result_dir=result_dir, content=content, content_type=content_type)
    return await stub.StoreResult(request, timeout=RPC_TIMEOUT_S)


async def _get(stub, task_id: str) -> list:
    return [m async for m in stub.GetResult(pb.GetResultRequest(task_id=task_id), timeout=RPC_TIMEOUT_S)]


def test_a_stored_result_is_durable_at_result_dir_task_id_json_and_its_info_matches_the_disk(config):
    task = str(uuid.uuid4())
    content = b'{"words": 3}'

    async def scenario() -> None:
        async with storekeeper(config) as stub:
            stored = await _store(stub, task, "reports/2026", content)
            info = await stub.GetResultInfo(pb.GetResultInfoRequest(task_id=task), timeout=RPC_TIMEOUT_S)
        on_disk = (config.storage_root / stored.path).read_bytes()
        assert stored.path == f"reports/2026/{task}.json"
        assert on_disk == content
        assert stored.size_bytes == info.size_bytes == len(on_disk)
        assert stored.sha256 == info.sha256 == hashlib.sha256(on_disk).hexdigest()
        assert (info.task_id, info.result_dir, info.path) == (task, "reports/2026", stored.path)
        assert info.content_type == "application/json"
        assert info.HasField("stored_at") and info.stored_at.seconds > 0

    asyncio.run(scenario())


def test_get_result_streams_a_5_mib_result_back_byte_for_byte_in_64_kib_chunks(config):
    task = str(uuid.uuid4())
    content = os.urandom(5 * 1024 * 1024)

    async def scenario() -> None:
        async with storekeeper(config) as stub:
            stored = await _store(stub, task, "big", content, "application/octet-stream")
            bodies = await _get(stub, task)
        assert stored.size_bytes == len(content)
        assert len(bodies) == len(content) // CHUNK_BYTES
        assert all(len(b.data) <= CHUNK_BYTES for b in bodies)
        assert {b.content_type for b in bodies} == {"application/octet-stream"}
        assert b"".join(b.data for b in bodies) == content

    asyncio.run(scenario())


def test_an_empty_result_is_one_empty_body_with_its_content_type(config):
    task = str(uuid.uuid4())

    async def scenario() -> None:
        async with storekeeper(config) as stub:
            stored = await _store(stub, task, "empty", b"", "text/plain")
            bodies = await _get(stub, task)
        assert stored.size_bytes == 0
        assert [(b.content_type, b.data) for b in bodies] == [("text/plain", b"")]

    asyncio.run(scenario())


def test_storing_a_task_again_replaces_file_and_index_entry_idempotently(config):
    task = str(uuid.uuid4())

    async def scenario() -> None:
        async with storekeeper(config) as stub:
            first = await _store(stub, task, "d", b'"first"')
            assert await _store(stub, task, "d", b'"first"') == first
            second = await _store(stub, task, "d", b'"second"')
            info = await stub.GetResultInfo(pb.GetResultInfoRequest(task_id=task), timeout=RPC_TIMEOUT_S)
            bodies = await _get(stub, task)
        assert second.path == first.path
        assert info.sha256 == second.sha256 == hashlib.sha256(b'"second"').hexdigest()
        assert b"".join(b.data for b in bodies) == b'"second"'
        assert _files(config.storage_root) == [f"d/{task}.json"]  # no temporary file left over
        assert _index_rows(config) == 1

    asyncio.run(scenario())


def test_list_results_pages_through_every_result_of_a_directory_and_of_all(config):
    async def scenario() -> None:
        async with storekeeper(config) as stub:
            in_a = [(await _store(stub, str(uuid.uuid4()), "a", b"1")).path for _ in range(7)]
            in_b = [(await _store(stub, str(uuid.uuid4()), "b/c", b"2")).path for _ in range(3)]

            async def pages(result_dir: str, page_size: int) -> list[list[str]]:
                out, token = [], ""
                while True:
                    request = pb.ListResultsRequest(result_dir=result_dir, page_size=page_size, page_token=token)
                    response = await stub.ListResults(request, timeout=RPC_TIMEOUT_S)
                    out.append([r.path for r in response.results])
                    token = response.next_page_token
                    if not token:
                        return out

            assert await pages("a", 3) == [in_a[0:3], in_a[3:6], in_a[6:7]]
            assert await pages("b/c/", 0) == [in_b]
            assert await pages("", 4) == [in_a[0:4], in_a[4:7] + in_b[0:1], in_b[1:3]]

            first = await stub.ListResults(pb.ListResultsRequest(result_dir="a", page_size=3), timeout=RPC_TIMEOUT_S)
            for request in (
                pb.ListResultsRequest(result_dir="a", page_token="not-a-token"),
                pb.ListResultsRequest(result_dir="b/c", page_token=first.next_page_token),
                pb.ListResultsRequest(result_dir="../etc"),
                pb.ListResultsRequest(page_size=-1),
            ):
                with pytest.raises(grpc.RpcError) as e:
                    await stub.ListResults(request, timeout=RPC_TIMEOUT_S)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request

    asyncio.run(scenario())


BAD_STORES = [
    # (task_id, result_dir, content size, content_type) -> code, words in the message
    ("not-a-uuid", "d", 1, "", grpc.StatusCode.INVALID_ARGUMENT, "task_id"),
    ("", "d", 1, "", grpc.StatusCode.INVALID_ARGUMENT, "task_id"),
    (None, "../escape", 1, "", grpc.StatusCode.INVALID_ARGUMENT, "result_dir"),
    (None, "/etc", 1, "", grpc.StatusCode.INVALID_ARGUMENT, "result_dir"),
    (None, "a/../../b", 1, "", grpc.StatusCode.INVALID_ARGUMENT, "result_dir"),
    (None, "odd dir!", 1, "", grpc.StatusCode.INVALID_ARGUMENT, "result_dir"),
    (None, "", 1, "", grpc.StatusCode.INVALID_ARGUMENT, "result_dir"),
    (None, "d", 1, "text\nplain", grpc.StatusCode.INVALID_ARGUMENT, "content_type"),
    (None, "d", MAX_RESULT_BYTES + 1, "", grpc.StatusCode.RESOURCE_EXHAUSTED, f"limit is {MAX_RESULT_BYTES} bytes"),
]


def test_bad_store_requests_get_the_right_code_and_leave_no_file_and_no_index_row(config):
    async def scenario() -> None:
        async with storekeeper(config) as stub:
            for task_id, result_dir, size, content_type, code, words in BAD_STORES:
                with pytest.raises(grpc.RpcError) as e:
                    await _store(
                        stub,
                        task_id if task_id is not None else str(uuid.uuid4()),
                        result_dir,
                        b"x" * size,
                        content_type,
                    )
                assert e.value.code() == code, e.value.details()
                assert words in e.value.details()
            listed = await stub.ListResults(pb.ListResultsRequest(), timeout=RPC_TIMEOUT_S)
        assert list(listed.results) == []
        assert _files(config.storage_root) == []
        assert not (config.state_path / "escape").exists()
        assert _index_rows(config) == 0

    asyncio.run(scenario())


def test_without_its_scheduler_the_result_of_a_task_it_has_no_entry_for_is_unavailable(config):
    # Only the Scheduler's task row can tell "never completed" from "completed,
    # but its entry never reached this index" (a crash, a lost answer): with
    # no Scheduler to ask, the honest answer is "try again", not NOT_FOUND.
    # (With the Scheduler up, it is NOT_FOUND: tests/e2e/test_edge.py.)
    task = str(uuid.uuid4())

    async def scenario() -> None:
        async with storekeeper(config) as stub:
            with pytest.raises(grpc.RpcError) as info:
                await stub.GetResultInfo(pb.GetResultInfoRequest(task_id=task), timeout=RPC_TIMEOUT_S)
            with pytest.raises(grpc.RpcError) as body:
                await _get(stub, task)
            with pytest.raises(grpc.RpcError) as bad:
                await _get(stub, "../../etc/passwd")
        for e in (info.value, body.value):
            assert e.code() == grpc.StatusCode.UNAVAILABLE
            assert e.details().startswith(f"no Scheduler answered about the result of task {task}"), e.details()
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(scenario())


def test_stored_results_survive_a_storekeeper_restart(config):
    task = str(uuid.uuid4())

    async def scenario() -> None:
        async with storekeeper(config) as stub:
            stored = await _store(stub, task, "kept", b'{"kept": true}')
        async with storekeeper(config) as stub:
            info = await stub.GetResultInfo(pb.GetResultInfoRequest(task_id=task), timeout=RPC_TIMEOUT_S)
            bodies = await _get(stub, task)
        assert (info.path, info.sha256) == (stored.path, stored.sha256)
        assert b"".join(b.data for b in bodies) == b'{"kept": true}'

    asyncio.run(scenario())


def test_a_client_that_abandons_a_result_stream_leaves_the_storekeeper_serving(config):
    task = str(uuid.uuid4())
    content = os.urandom(2 * 1024 * 1024)

    async def scenario() -> None:
        async with storekeeper(config) as stub:
            await _store(stub, task, "big", content, "application/octet-stream")
            call = stub.GetResult(pb.GetResultRequest(task_id=task), timeout=RPC_TIMEOUT_S)
            first = await call.read()
            call.cancel()
            bodies = await _get(stub, task)
        assert len(first.data) == CHUNK_BYTES
        assert b"".join(b.data for b in bodies) == content

    asyncio.run(scenario())
