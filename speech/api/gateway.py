"""The state one running gateway shares between its handlers.

Built once by :func:`speech.api.app.create_app`; handlers reach it as
``request.app.state.gateway``. Engines load off the event loop during
start-up; until they are ready ``/healthz`` answers 503 and speech requests
get a 503 / close 1013.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from speech.api.streams import StreamRegistry
from speech.errors import AuthError, EngineUnavailable, LimitExceeded, PaymentRequired
from speech.metering.ledger import Ledger
from speech.metering.prices import PriceTable, format_omcu
from speech.metering.records import ApiKey
from speech.observability.metrics import GatewayMetrics
from speech.providers.base import SynthesisRequest
from speech.providers.registry import Engines
from speech.settings import Settings

log = logging.getLogger("speech.gateway")


@dataclass
class Gateway:
    settings: Settings
    ledger: Ledger
    prices: PriceTable
    engines: Engines | None = None
    load_error: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # Built by create_app (its /metrics registry); a Gateway made without one gets its own.
    metrics: GatewayMetrics = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = GatewayMetrics(self.settings, process=False)

    def require_engines(self) -> Engines:
        if self.engines is None:
            reason = self.load_error or "the speech engines are still loading"
            raise EngineUnavailable(f"engine not ready: {reason}")
        return self.engines

    async def authenticate(self, key: str) -> ApiKey:
        """The key's account, or AuthError (missing / invalid / revoked)."""
        return await self.ledger.authenticate(key)

    streams: StreamRegistry | None = None

    async def require_balance(self, account: ApiKey, reserved: int = 0) -> None:
        """PaymentRequired unless the key's account has credit available
        (balance less live reservations), less ``reserved`` µOMCU of work
        already done but not yet billed, above zero."""
        available = await self.ledger.available(account.account_id)
        if available - reserved <= 0:
            raise PaymentRequired("insufficient balance: top up this API key to continue")

    async def admit(self, key: ApiKey) -> None:
        """Per-key request limit: each HTTP request and each new stream counts."""
        if key.rpm is None:
            return
        allowed, _ = await self.ledger.count_request(key.key_id, rpm=key.rpm)
        if not allowed:
            raise LimitExceeded(f"rate limit: this API key allows {key.rpm} requests per minute")

    async def acquire_stream(self, key: ApiKey, stream_id: str) -> str | None:
        """A concurrent-stream lease for a key with ``max_streams`` (its id),
        None for keys without the limit; LimitExceeded when all are taken."""
        if key.max_streams is None:
            return None
        lease = f"lease:{stream_id}"
        limits = self.settings.limits
        replica = self.streams.replica_id if self.streams is not None else ""
        if not await self.ledger.acquire_stream(
            lease, key_id=key.key_id, max_streams=key.max_streams, ttl_s=limits.stream_lease_ttl_s, replica=replica
        ):
            raise LimitExceeded(f"too many concurrent streams: this API key allows {key.max_streams}")
        return lease

    async def reserve(self, reservation_id: str, key: ApiKey, want_uomcu: int) -> int:
        """Hold credit before work is forwarded (PaymentRequired if none is available)."""
        return await self.ledger.reserve(
            reservation_id,
            key_id=key.key_id,
            want_uomcu=want_uomcu,
            ttl_s=self.settings.limits.reservation_ttl_s,
        )

    async def reserve_in_full(self, reservation_id: str, key: ApiKey, cost: int, what: str = "this request") -> None:
        """Hold all of ``cost`` or hold nothing and raise PaymentRequired (402):
        for work priced before it starts (TTS requests and sentences)."""
        granted = await self.reserve(reservation_id, key, cost)
        if granted < cost:
            await self.release(reservation_id)
            raise PaymentRequired(
                f"insufficient balance: {what} costs {format_omcu(cost)} OMCU, {format_omcu(granted)} available"
            )

    def tts_fee(self, request: SynthesisRequest, engines: Collection[str]) -> int | None:
        """The per-million-character unit price that replaces the route's when
        the caller's own ElevenLabs key paid ElevenLabs for all of it (None: the route's)."""
        if request.caller_api_key and set(engines) == {"elevenlabs"}:
            return int(self.settings.elevenlabs.caller_key_fee_per_million_chars * 1_000_000)
        return None

    async def release(self, reservation_id: str) -> None:
        """Give held credit back; shielded so a cancelled caller still releases it."""
        await asyncio.shield(self.ledger.release(reservation_id))


__all__ = ["Gateway", "AuthError"]
