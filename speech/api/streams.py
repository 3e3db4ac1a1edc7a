"""What one gateway replica knows about its open streams, and the background
loop that keeps them honest against the shared ledger.

Every ``revocation_poll_s`` (0.5 s) the loop asks the ledger which of the
keys with open streams here are revoked or expired (one small query) and
closes those streams with an error frame and close code 4401. Because every
replica runs the same loop against the same database, revoking a key closes
its streams everywhere within about one poll interval. The loop also renews
this replica's concurrent-stream leases (a killed replica's leases lapse
after ``stream_lease_ttl_s``) and sweeps expired reservations, leases and
rate windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Protocol

from speech.errors import AuthError
from speech.metering.ledger import Ledger
from speech.settings import LimitSettings

log = logging.getLogger("speech.streams")

SWEEP_EVERY_S = 30.0


class Terminable(Protocol):
    key_id: str
    lease_id: str | None

    def live_reservations(self) -> list[str]: ...

    async def terminate(self, error: AuthError) -> None: ...


def default_replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class StreamRegistry:
    def __init__(self, ledger: Ledger, limits: LimitSettings, replica_id: str = "") -> None:
        self.ledger = ledger
        self.limits = limits
        self.replica_id = replica_id or default_replica_id()
        self._streams: dict[str, set[Terminable]] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return sum(len(s) for s in self._streams.values())

    def add(self, stream: Terminable) -> None:
        self._streams.setdefault(stream.key_id, set()).add(stream)

    def remove(self, stream: Terminable) -> None:
        streams = self._streams.get(stream.key_id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._streams[stream.key_id]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="stream-registry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, clock: Callable[[], float] = time.monotonic) -> None:
        renew_every = self.limits.stream_lease_ttl_s / 3
        last_renew = last_sweep = clock()
        while True:
            await asyncio.sleep(self.limits.revocation_poll_s)
            try:
                await self.check_revocations()
                now = clock()
                if now - last_renew >= renew_every:
                    last_renew = now
                    await self.renew_leases()
                    await self.renew_reservations()
                if now - last_sweep >= SWEEP_EVERY_S:
                    last_sweep = now
                    await self.ledger.expire_stale()
            except Exception:  # the database may be briefly unreachable; try again next tick
                log.exception("stream housekeeping failed; retrying")

    async def check_revocations(self) -> None:
        if not self._streams:
            return
        inactive = await self.ledger.inactive_keys(list(self._streams))
        for key_id in inactive:
            key = await self.ledger.get_key(key_id)
            reason = "API key revoked" if key is None or key.revoked else "API key expired"
            for stream in list(self._streams.get(key_id, ())):
                log.info("closing a stream of key %s: %s", key_id, reason)
                await stream.terminate(AuthError(reason))

    async def renew_reservations(self) -> None:
        """Utterances still running keep their credit however long they take."""
        held = [r for streams in self._streams.values() for s in streams for r in s.live_reservations()]
        if held:
            await self.ledger.renew(held, self.limits.reservation_ttl_s)

    async def renew_leases(self) -> None:
        leases = [s.lease_id for streams in self._streams.values() for s in streams if s.lease_id]
        if leases:
            await self.ledger.renew_streams(leases, self.limits.stream_lease_ttl_s)
