"""The ledger as the gateway's handlers see it: every new usage record also
counts in the metrics.

Every piece of billing (ASR utterances, TTS requests and sentences, chat
completions, file transcriptions) goes through :meth:`Ledger.settle` or
:meth:`Ledger.record_usage`, so wrapping those two counts cost, billed
seconds, characters and tokens from the records themselves, exactly once
(an idempotent replay returns ``created = False`` and counts nothing), with no
instrumentation at the call sites. Every other method passes through.
"""

from __future__ import annotations

from typing import Any, cast

from speech.metering.ledger import Ledger
from speech.metering.records import UsageIn, UsageRecord
from speech.observability.metrics import GatewayMetrics


class ObservedLedger:
    def __init__(self, inner: Ledger, metrics: GatewayMetrics) -> None:
        self.inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def settle(self, reservation_id: str, usage: UsageIn | None) -> tuple[UsageRecord | None, bool]:
        record, created = await self.inner.settle(reservation_id, usage)
        if created and record is not None:
            self._metrics.usage(record)
        return record, created

    async def record_usage(self, u: UsageIn) -> tuple[UsageRecord, bool]:
        record, created = await self.inner.record_usage(u)
        if created:
            self._metrics.usage(record)
        return record, created


def observed(ledger: Ledger, metrics: GatewayMetrics) -> Ledger:
    """``ledger`` with its usage counted in ``metrics`` (same interface)."""
    return cast(Ledger, ObservedLedger(ledger, metrics))
