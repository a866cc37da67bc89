"""How long to pause before trying again: one rule for every reconnect and
retry loop of the mesh and its clients, and for a task's retry policy.

The pause before retry ``n`` (0: the first) is drawn between half and all of
``initial_s * multiplier**n``, capped at ``max_s`` ("equal jitter"): it grows
as failures go on, never passes ``max_s``, and processes cut off together
(every worker when the Scheduler fails over, say) do not all come back at the
same instant.
"""

from __future__ import annotations

import itertools
import random as _random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_MAX_EXPONENT = 64
"""Past this many doublings every pause is ``max_s`` anyway; stops a long
outage's count from overflowing the float."""


@dataclass(frozen=True)
class Backoff:
    initial_s: float
    """The longest pause before the first retry."""
    max_s: float
    """The longest pause ever."""
    multiplier: float = 2.0
    """How much longer each retry may wait than the one before."""

    def ceiling_s(self, retry: int) -> float:
        """The longest pause before retry ``retry`` (0: the first)."""
        return min(self.max_s, self.initial_s * self.multiplier ** min(retry, _MAX_EXPONENT))

    def pause_s(self, retry: int, random: Callable[[], float] = _random.random) -> float:
        """The pause before retry ``retry``: between half its ceiling and all of it."""
        ceiling = self.ceiling_s(retry)
        return ceiling / 2 + ceiling / 2 * random()

    def pauses(self, random: Callable[[], float] = _random.random) -> Iterator[float]:
        """The pauses before retries 0, 1, 2, … without end. After a success,
        take a new iterator: the next failure waits the shortest again."""
        return (self.pause_s(retry, random) for retry in itertools.count())
