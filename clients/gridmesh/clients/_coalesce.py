"""Concurrent calls that share round trips, without a timer.

A call made while no round trip is in flight goes out at once, alone. Calls
made while one is in flight wait in line; when it returns, the first of
them takes everything in line (up to ``max_batch``) out as the next round
trip. So a lone caller is never delayed, and under load each round trip
carries whatever queued while the previous one was on the wire (the
"smart batching" of group commit). Each caller gets exactly its own
outcome, or its own exception. :class:`Coalescer` serves threads,
:class:`AsyncCoalescer` the coroutines of one event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["AsyncCoalescer", "Coalescer"]

Req = TypeVar("Req")
Res = TypeVar("Res")


class _Call(Generic[Req, Res]):
    __slots__ = ("done", "error", "leads", "outcome", "request")

    def __init__(self, request: Req) -> None:
        self.request = request
        self.done = threading.Event()
        self.leads = False
        self.outcome: Res | None = None
        self.error: BaseException | None = None


class Coalescer(Generic[Req, Res]):
    """Runs ``send_batch(requests) -> outcomes`` (one per request, in order;
    an outcome may be an exception, raised to its own caller only) for
    concurrent :meth:`call` s. An exception raised by ``send_batch`` itself
    goes to every caller of that batch."""

    def __init__(self, send_batch: Callable[[Sequence[Req]], Sequence[Res | BaseException]], max_batch: int) -> None:
        self._send_batch = send_batch
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._line: list[_Call[Req, Res]] = []
        self._busy = False

    def call(self, request: Req) -> Res:
        me: _Call[Req, Res] = _Call(request)
        with self._lock:
            self._line.append(me)
            if not self._busy:
                self._busy = me.leads = True
        if not me.leads:
            me.done.wait()  # set with our outcome, or to make us lead the next batch
        if me.leads:
            self._lead()
        if me.error is not None:
            raise me.error
        return me.outcome  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._lock:
            batch, self._line = self._line[: self._max_batch], self._line[self._max_batch :]
        try:
            outcomes = self._send_batch([c.request for c in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} answers to a batch of {len(batch)}")
            for c, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    c.error = outcome
                else:
                    c.outcome = outcome
        except BaseException as e:
            for c in batch:
                c.error = e
        finally:
            with self._lock:
                successor = self._line[0] if self._line else None
                if successor is None:
                    self._busy = False
                else:
                    successor.leads = True
            for c in batch:
                c.leads = False
                c.done.set()
            if successor is not None:
                successor.done.set()


class AsyncCoalescer(Generic[Req, Res]):
    """:class:`Coalescer` for coroutines on one event loop: the first call
    starts a pump that sends what is in line, one batch per round trip,
    until the line is empty."""

    def __init__(
        self, send_batch: Callable[[Sequence[Req]], Awaitable[Sequence[Res | BaseException]]], max_batch: int
    ) -> None:
        self._send_batch = send_batch
        self._max_batch = max_batch
        self._line: list[tuple[Req, asyncio.Future[Res]]] = []
        self._pump: asyncio.Task[None] | None = None

    async def call(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._line.append((request, future))
        if self._pump is None:
            self._pump = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        batch: list[tuple[Req, asyncio.Future[Res]]] = []
        try:
            while self._line:
                batch, self._line = self._line[: self._max_batch], self._line[self._max_batch :]
                try:
                    outcomes = await self._send_batch([request for request, _ in batch])
                    if len(outcomes) != len(batch):
                        raise RuntimeError(f"{len(outcomes)} answers to a batch of {len(batch)}")
                except Exception as e:  # it goes to every caller of the batch
                    outcomes = [e] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its caller went away
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._pump = None
            for _, future in batch + self._line:  # cancelled mid-way: no caller waits forever
                future.cancel()
            self._line = []
