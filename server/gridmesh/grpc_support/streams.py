"""Batching on long-lived gRPC streams, both ends.

Every internal stream of the mesh carries batches: whatever is queued when
the sender is free goes out as one message. There is no timer on the way: a
lone item is sent at once, and items pile up into one message only while
the previous one is being sent (or the peer is busy). One message of ten
items costs a little more than one message of one item, and a lot less
than ten.

- :func:`batches` is the sending side: a queue read as lists.
- :func:`answer_each` is a servicer's side of a request/answer stream: every
  item of every incoming message is handled concurrently, and the answers
  that are ready go back together.
- :class:`RequestStream` is a client's side of such a stream: a call per
  item, matched to its answer, over one stream re-opened when it breaks.
- :func:`write_all` is how a client's stream sends: its own task, writing
  to a call opened without a request iterator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

import grpc
from grpc import aio

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M")
I = TypeVar("I")  # noqa: E741 - an item of a message
A = TypeVar("A")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)


async def batches(queue: asyncio.Queue[T]) -> AsyncIterator[list[T]]:
    """Wait for the first item, then take every item already queued with it."""
    while True:
        items = [await queue.get()]
        while not queue.empty():
            items.append(queue.get_nowait())
        yield items


def write_all(call: aio.StreamStreamCall[M, R], messages: AsyncIterator[M]) -> asyncio.Task[None]:
    """Write ``messages`` to ``call`` (opened without a request iterator) on
    a task of its own, until they end (then the call is half-closed) or the
    call does; cancel the task when done with the call.

    Handing grpc the iterator instead leaves grpc's own task consuming it
    pending when the call is cancelled, and every broken stream logs "Task
    was destroyed but it is pending!" and "aclose(): asynchronous generator
    is already running"."""

    async def write() -> None:
        try:
            async for message in messages:
                await call.write(message)
            await call.done_writing()
        except (aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the call ended: whoever reads it learns why

    return asyncio.create_task(write())


class _End:
    """Marks the end of the answers."""


_END = _End()


async def answer_each(
    messages: AsyncIterator[M],
    items: Callable[[M], Iterable[I]],
    handle: Callable[[I], Awaitable[A]],
    pack: Callable[[list[A]], R],
) -> AsyncIterator[R]:
    """The servicer side of a batched request/answer stream.

    Each item of each message (``items(message)``) is handled at once, on its
    own task, so a slow one never holds up the others; answers go back as
    ``pack(answers ready)``. ``handle`` answers errors itself (an answer
    carries its code); one that raises anyway is logged and left unanswered
    (the client retries it). The stream ends once the client has closed its
    side and every item is answered.
    """
    answers: asyncio.Queue[A | _End] = asyncio.Queue()
    handlers: set[asyncio.Task[None]] = set()

    async def run(item: I) -> None:
        try:
            answers.put_nowait(await handle(item))
        except Exception:
            log.exception("handling a stream item failed; it stays unanswered")

    async def read() -> None:
        try:
            async for message in messages:
                for item in items(message):
                    job = asyncio.create_task(run(item))
                    handlers.add(job)
                    job.add_done_callback(handlers.discard)
            if handlers:
                await asyncio.wait(handlers)
        finally:
            answers.put_nowait(_END)

    reader = asyncio.create_task(read())
    try:
        async for batch in batches(answers):
            ready = [answer for answer in batch if not isinstance(answer, _End)]
            if ready:
                yield pack(ready)
            if len(ready) < len(batch):
                break
        reader.result()  # re-raise what ended the client's side, if anything
    finally:
        reader.cancel()
        for job in list(handlers):
            job.cancel()


class _Open(Generic[K, I]):
    """One opened stream: what to send on it and who waits on it."""

    def __init__(self) -> None:
        self.outgoing: asyncio.Queue[I] = asyncio.Queue()
        self.keys: set[K] = set()
        self.task: asyncio.Task[None] | None = None


class RequestStream(Generic[K, I, A, M, R]):
    """The client side of a batched request/answer stream: :meth:`call` sends
    one item and waits for its answer, found by ``key``. Items go out as
    ``pack(items queued)``; answers come in as ``unpack(message)``.

    The stream is opened on the first call and again after it broke
    (``open_call`` is called each time, so it may pick another server). When
    it breaks, every call waiting on it fails with the stream's error; the
    caller decides whether to retry (so the items must be safe to send twice).
    """

    def __init__(
        self,
        open_call: Callable[[], aio.StreamStreamCall[M, R]],
        *,
        item_key: Callable[[I], K],
        answer_key: Callable[[A], K],
        pack: Callable[[list[I]], M],
        unpack: Callable[[R], Iterable[A]],
        what: str,
    ) -> None:
        self._open_call = open_call
        self._item_key = item_key
        self._answer_key = answer_key
        self._pack = pack
        self._unpack = unpack
        self._what = what
        self._waiting: dict[K, asyncio.Future[A]] = {}
        self._open: _Open[K, I] | None = None

    async def call(self, item: I, timeout: float) -> A:
        """Send ``item`` and wait for its answer. Raises :class:`aio.AioRpcError`
        if the stream breaks first, DEADLINE_EXCEEDED after ``timeout``."""
        key = self._item_key(item)
        answer: asyncio.Future[A] = asyncio.get_running_loop().create_future()
        self._waiting[key] = answer
        stream = self._open
        if stream is None:
            stream = self._open = _Open()
            stream.task = asyncio.create_task(self._run(stream))
        stream.keys.add(key)
        stream.outgoing.put_nowait(item)
        try:
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer from {self._what}") from None
        finally:
            stream.keys.discard(key)
            if self._waiting.get(key) is answer:
                del self._waiting[key]

    async def _run(self, stream: _Open[K, I]) -> None:
        async def messages() -> AsyncIterator[M]:
            async for items in batches(stream.outgoing):
                yield self._pack(items)

        call = self._open_call()
        writer = write_all(call, messages())
        error = _CLOSED
        try:
            async for message in call:
                for answer in self._unpack(message):
                    waiting = self._waiting.get(self._answer_key(answer))
                    if waiting is not None and not waiting.done():
                        waiting.set_result(answer)
            error = _rpc_error(grpc.StatusCode.UNAVAILABLE, f"{self._what} ended the stream")
        except aio.AioRpcError as e:
            error = e
        finally:
            writer.cancel()
            call.cancel()
            if self._open is stream:
                self._open = None
            self._fail(stream, error)

    def _fail(self, stream: _Open[K, I], error: aio.AioRpcError) -> None:
        """Every call waiting on ``stream`` fails with ``error``."""
        for key in stream.keys:
            waiting = self._waiting.get(key)
            if waiting is not None and not waiting.done():
                waiting.set_exception(error)

    def close(self) -> None:
        """End the stream (the calls waiting on it fail); the next call opens a new one."""
        stream, self._open = self._open, None
        if stream is not None and stream.task is not None:
            stream.task.cancel()
            self._fail(stream, _CLOSED)


def _rpc_error(code: grpc.StatusCode, details: str) -> aio.AioRpcError:
    return aio.AioRpcError(code, aio.Metadata(), aio.Metadata(), details)


_CLOSED = _rpc_error(grpc.StatusCode.UNAVAILABLE, "the stream was closed")


__all__ = ["RequestStream", "answer_each", "batches", "write_all"]
