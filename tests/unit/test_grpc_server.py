"""The process life every service shares (grpc_support.server): a stop
request ends a process even before it became ready."""

from __future__ import annotations

import asyncio

from gridmesh.grpc_support.server import build_grpc_server, serve_until_signal


def test_a_stop_before_ready_cancels_the_readying_and_shuts_down():
    cancelled = asyncio.Event()

    async def never_ready() -> None:  # e.g. a worker retrying to register with no Scheduler up
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def scenario() -> None:
        host = build_grpc_server("127.0.0.1:0", [], (), tls=None)
        stop = asyncio.Event()
        serving = asyncio.create_task(serve_until_signal(host, ready=never_ready, stop=stop, grace_s=0))
        await asyncio.sleep(0.1)
        assert not serving.done()
        stop.set()
        await asyncio.wait_for(serving, 5)
        assert cancelled.is_set()

    asyncio.run(scenario())


def test_a_ready_process_serves_until_stopped():
    async def scenario() -> None:
        host = build_grpc_server("127.0.0.1:0", [], (), tls=None)
        readied = asyncio.Event()

        async def ready() -> None:
            readied.set()

        stop = asyncio.Event()
        serving = asyncio.create_task(serve_until_signal(host, ready=ready, stop=stop, grace_s=0))
        await asyncio.wait_for(readied.wait(), 5)
        await asyncio.sleep(0.05)
        assert not serving.done()
        stop.set()
        await asyncio.wait_for(serving, 5)

    asyncio.run(scenario())
