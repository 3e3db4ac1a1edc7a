"""The credit of one chat completion: reserved, kept alive, settled once.

* **Reserve** before the upstream is called: the estimated input (see
  :mod:`speech.llm.estimate`) plus ``max_completion_tokens`` / ``max_tokens``
  (or ``llm.default_max_tokens`` when the request sets neither) at the
  model's prices. Less credit than that available is a 402 naming both
  amounts, and nothing goes upstream.
* **Keep alive**: a long generation renews its reservation every third of
  ``limits.reservation_ttl_s`` (for at most ``llm.total_timeout_s``), so it
  keeps holding credit for as long as it runs, while a killed gateway's
  reservations still lapse after the TTL.
* **Settle** once, in the transaction that writes the usage record (the
  idempotency key is the request id, ``llm:<hex>``): the upstream's
  ``usage`` counts, or the estimate where it reported none, marked
  ``estimated``. Work done is always billed in full, even beyond the
  reservation: an answer longer than the default ``max_tokens`` (when the
  request set none) or an input above its estimate can take the balance
  below zero by that difference; a request that sets ``max_tokens`` cannot.
* **Release** on every failure before any answer reached the client
  (shielded, so a cancelled request still releases).
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from speech.api.gateway import Gateway
from speech.errors import PaymentRequired
from speech.llm.sse import Usage
from speech.metering.prices import MAX_UOMCU, TOKENS_PER_UNIT, format_omcu, llm_cost_from_unit
from speech.metering.records import ApiKey, UsageIn, UsageRecord

log = logging.getLogger("speech.chat")


class ChatBill:
    def __init__(
        self,
        gateway: Gateway,
        account: ApiKey,
        *,
        provider: str,
        model: str,
        units: tuple[int, int],
        free: bool,
        input_estimate: int,
        max_life_s: float,
    ) -> None:
        self.id = f"llm:{uuid.uuid4().hex}"
        self._gateway = gateway
        self._account = account
        self._provider = provider
        self._model = model
        self._units = units
        self._free = free
        self.input_estimate = input_estimate
        self._max_life_s = max_life_s
        self._renewal: asyncio.Task[None] | None = None
        self._closed = False

    async def reserve(self, max_output_tokens: int) -> int:
        """Hold the request's worst case; PaymentRequired (402) if not covered."""
        # Capped at the largest amount the ledger takes: nobody has that much credit.
        want = min(llm_cost_from_unit(*self._units, self.input_estimate, max_output_tokens), MAX_UOMCU)
        granted = await self._gateway.reserve(self.id, self._account, want)
        if granted < want:
            await self._gateway.release(self.id)
            unit_in, unit_out = self._units
            affordable = max(0, (granted * TOKENS_PER_UNIT - unit_in * self.input_estimate) // max(unit_out, 1))
            raise PaymentRequired(
                f"insufficient balance: this request may cost up to {format_omcu(want)} OMCU "
                f"({self.input_estimate} input tokens estimated, up to {max_output_tokens} output tokens); "
                f"{format_omcu(granted)} OMCU available, enough for about {affordable} output tokens: "
                "lower max_tokens or top up"
            )
        self._renewal = asyncio.create_task(self._renew())
        return want

    async def _renew(self) -> None:
        # Bounded by the longest a request may live, so a bill that is somehow
        # never closed stops holding credit one TTL after that.
        ttl = self._gateway.settings.limits.reservation_ttl_s
        stop = asyncio.get_running_loop().time() + self._max_life_s
        while asyncio.get_running_loop().time() + ttl / 3 < stop:
            await asyncio.sleep(ttl / 3)
            try:
                await self._gateway.ledger.renew([self.id], ttl)
            except Exception:  # a failed renewal only shortens the hold; the next one may work
                log.warning("could not renew reservation %s", self.id, exc_info=True)

    def _stop_renewal(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()

    async def settle(self, usage: Usage | None, output_estimate: int) -> UsageRecord | None:
        """Record the usage (upstream counts where given, else the estimate)
        and drop the reservation, in one transaction. Once only; later calls
        return ``None``."""
        if self._closed:
            return None
        self._closed = True
        self._stop_renewal()
        tokens_in = usage.input_tokens if usage is not None and usage.input_tokens is not None else None
        tokens_out = usage.output_tokens if usage is not None and usage.output_tokens is not None else None
        record, _ = await self._gateway.ledger.settle(
            self.id,
            UsageIn.llm(
                self._gateway.prices,
                idempotency_key=self.id,
                key_id=self._account.key_id,
                provider=self._provider,
                engine=self._provider,
                model=self._model,
                input_tokens=self.input_estimate if tokens_in is None else tokens_in,
                output_tokens=output_estimate if tokens_out is None else tokens_out,
                estimated=tokens_in is None or tokens_out is None,
                free=self._free,
            ),
        )
        return record

    async def release(self) -> None:
        """Give the credit back without billing (nothing was produced). Once only."""
        if self._closed:
            return
        self._closed = True
        self._stop_renewal()
        try:
            await self._gateway.release(self.id)
        except Exception:  # the reservation then lapses after its TTL
            log.warning("could not release reservation %s", self.id, exc_info=True)
