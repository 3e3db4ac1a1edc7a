"""A chat request's credit against a real SQLite ledger on a controlled clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from speech.api.chat_billing import ChatBill
from speech.api.gateway import Gateway
from speech.errors import PaymentRequired
from speech.llm.sse import Usage
from speech.metering.factory import open_ledger
from speech.metering.prices import PriceTable
from speech.settings import load_settings
from tests.metering.conftest import FakeClock

MINI = (7_000_000_000, 28_000_000_000)


async def make(tmp_path: Path, clock: FakeClock, balance: int) -> tuple[Gateway, ChatBill, str]:
    settings = load_settings(environ={}, overrides={"limits.reservation_ttl_s": 10})
    ledger = await open_ledger(str(tmp_path / "l.db"), clock=clock)
    gateway = Gateway(settings=settings, ledger=ledger, prices=PriceTable.from_settings(settings.prices))
    _, key = await ledger.create_key("robot", balance)
    bill = ChatBill(
        gateway, key, provider="openai", model="gpt-4o-mini", units=MINI, free=False, input_estimate=100, max_life_s=600
    )
    return gateway, bill, key.account_id


async def test_a_long_request_keeps_its_credit_past_the_reservation_ttl(tmp_path: Path) -> None:
    clock = FakeClock()
    gateway, bill, account = await make(tmp_path, clock, 100_000_000)
    try:
        held = await bill.reserve(1000)
        assert held == 100 * 7_000 + 1000 * 28_000  # µOMCU
        clock.tick(8)
        await asyncio.sleep(10 / 3 + 0.5)  # one renewal (every third of the TTL)
        clock.tick(8)  # 16 s after the reservation: it would have lapsed at 10 s
        assert await gateway.ledger.available(account) == 100_000_000 - held
        record = await bill.settle(Usage(90, 10), 0)
        assert record is not None and (record.input_tokens, record.output_tokens, record.estimated) == (90, 10, False)
        assert await bill.settle(Usage(1, 1), 0) is None  # once only
        await bill.release()  # a no-op after the settlement
        balance = 100_000_000 - (90 * 7_000 + 10 * 28_000)
        assert await gateway.ledger.available(account) == await gateway.ledger.balance(account) == balance
    finally:
        await gateway.ledger.close()


async def test_missing_usage_counts_are_estimated(tmp_path: Path) -> None:
    gateway, bill, account = await make(tmp_path, FakeClock(), 100_000_000)
    try:
        await bill.reserve(10)
        record = await bill.settle(Usage(None, 42), 7)
        assert record is not None and (record.input_tokens, record.output_tokens, record.estimated) == (100, 42, True)
    finally:
        await gateway.ledger.close()


async def test_an_uncovered_request_is_refused_saying_what_would_fit(tmp_path: Path) -> None:
    gateway, bill, account = await make(tmp_path, FakeClock(), 1_000_000)  # 1 OMCU
    try:
        with pytest.raises(PaymentRequired) as info:
            await bill.reserve(4096)
        assert info.value.message == (
            "insufficient balance: this request may cost up to 115.388 OMCU (100 input tokens estimated, "
            "up to 4096 output tokens); 1 OMCU available, enough for about 10 output tokens: lower max_tokens or top up"
        )
        assert await gateway.ledger.available(account) == 1_000_000  # nothing stays held
        with pytest.raises(PaymentRequired):  # however large max_tokens is, the answer is a clean 402
            await bill.reserve(10**15)
    finally:
        await gateway.ledger.close()
