"""What every gridmesh client shares: the channel it may own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import grpc


class ChannelClient:
    """Opens a channel to ``target`` unless one is given; :meth:`close`
    closes only a channel it opened (idempotent); usable with ``with``."""

    def __init__(
        self,
        target: str,
        channel: grpc.Channel | None,
        rpc_timeout_s: float | None,
        options: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.target = target
        self._owns_channel = channel is None
        self._channel = channel if channel is not None else grpc.insecure_channel(target, options=list(options))
        self._timeout = rpc_timeout_s

    def close(self) -> None:
        """Closes the channel if this client opened it. Idempotent."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
