"""The client's submit coalescing: a lone call goes out at once and alone;
calls made while one is in flight share the next round trip; every caller
gets exactly its own outcome or its own error."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from gridmesh.clients._coalesce import AsyncCoalescer, Coalescer


class Wire:
    """A fake round trip that records its batches and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def send(self, requests: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(requests))
        self.entered.set()
        assert self.gate.wait(10)
        if -1 in requests:
            raise ConnectionError("the wire broke")
        return [ValueError(f"bad {r}") if r % 7 == 0 else r * 10 for r in requests]


def test_a_lone_call_goes_out_at_once_alone_and_answers_its_outcome():
    wire = Wire()
    coalescer = Coalescer(wire.send, max_batch=100)
    assert coalescer.call(3) == 30
    assert coalescer.call(4) == 40
    assert wire.batches == [[3], [4]]


def test_calls_made_while_one_is_in_flight_share_the_next_round_trip_each_with_its_own_outcome():
    wire = Wire()
    coalescer = Coalescer(wire.send, max_batch=100)
    wire.gate.clear()
    outcomes: dict[int, object] = {}

    def call(n: int) -> None:
        try:
            outcomes[n] = coalescer.call(n)
        except ValueError as e:
            outcomes[n] = e

    first = threading.Thread(target=call, args=(1,))
    first.start()
    assert wire.entered.wait(10)  # the first call is on the wire
    others = [threading.Thread(target=call, args=(n,)) for n in range(2, 31)]
    for t in others:
        t.start()
    waiting = lambda: len(coalescer._line) == 29  # noqa: E731 - every other call is in line
    for _ in range(1000):
        if waiting():
            break
        threading.Event().wait(0.01)
    assert waiting()
    wire.gate.set()
    for t in [first, *others]:
        t.join(10)

    assert wire.batches == [[1], list(range(2, 31))]
    assert {n: o for n, o in outcomes.items() if not isinstance(o, ValueError)} == {
        n: n * 10 for n in range(1, 31) if n % 7
    }
    assert sorted(n for n, o in outcomes.items() if isinstance(o, ValueError)) == [7, 14, 21, 28]
    assert str(outcomes[14]) == "bad 14"


def test_a_batch_larger_than_the_limit_is_split_and_a_broken_round_trip_fails_only_its_own_callers():
    wire = Wire()
    coalescer = Coalescer(wire.send, max_batch=3)
    wire.gate.clear()
    errors: dict[int, BaseException] = {}
    answers: dict[int, int] = {}

    def call(n: int) -> None:
        try:
            answers[n] = coalescer.call(n)
        except Exception as e:
            errors[n] = e

    first = threading.Thread(target=call, args=(-1,))  # breaks its round trip
    first.start()
    assert wire.entered.wait(10)
    others = [threading.Thread(target=call, args=(n,)) for n in (1, 2, 3, 4, 5)]
    for t in others:
        t.start()
        while t.is_alive() and len(coalescer._line) < others.index(t) + 1:
            threading.Event().wait(0.001)
    wire.gate.set()
    for t in [first, *others]:
        t.join(10)

    assert wire.batches == [[-1], [1, 2, 3], [4, 5]]
    assert isinstance(errors.pop(-1), ConnectionError) and not errors
    assert answers == {n: n * 10 for n in (1, 2, 3, 4, 5)}


def test_a_wrong_number_of_answers_is_an_error_not_a_silent_mixup():
    coalescer: Coalescer[int, int] = Coalescer(lambda requests: [1, 2], max_batch=10)
    with pytest.raises(RuntimeError, match="2 answers to a batch of 1"):
        coalescer.call(1)


def test_the_async_coalescer_sends_a_lone_call_alone_and_what_queued_meanwhile_together():
    async def body() -> None:
        batches: list[list[int]] = []
        gate = asyncio.Event()

        async def send(requests: Sequence[int]) -> list[int | BaseException]:
            batches.append(list(requests))
            await gate.wait()
            return [ValueError(f"bad {r}") if r == 5 else r * 10 for r in requests]

        coalescer: AsyncCoalescer[int, int] = AsyncCoalescer(send, max_batch=3)
        first = asyncio.create_task(coalescer.call(1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert batches == [[1]]  # on the wire at once, alone
        rest = [asyncio.create_task(coalescer.call(n)) for n in range(2, 7)]
        await asyncio.sleep(0)
        gate.set()
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        assert batches == [[1], [2, 3, 4], [5, 6]]
        assert outcomes[:4] == [10, 20, 30, 40] and outcomes[5] == 60
        assert isinstance(outcomes[4], ValueError) and str(outcomes[4]) == "bad 5"

    asyncio.run(body())
