"""The SQL ledger's plumbing: closing, shielded writes and all-or-nothing transactions.

Every test taking ``ledger`` or ``backend`` runs once per backend (see
``conftest.py``); a second ledger opened with ``backend.open()`` is another
replica on the same database, with its own connections.
"""

from __future__ import annotations

import asyncio

import pytest

from speech.metering.ledger import Ledger
from tests.metering.conftest import Backend, asr, tts

TTS_1 = 30_000  # µOMCU of one elevenlabs character


async def test_close_twice_and_closed_refuses_writes(ledger: Ledger) -> None:
    await ledger.close()
    await ledger.close()
    with pytest.raises(RuntimeError, match="closed"):
        await ledger.create_account("a", 1)


async def test_record_usage_survives_caller_cancellation(backend: Backend, ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 0)
    task = asyncio.ensure_future(ledger.record_usage(asr(key.key_id, "bye")))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await ledger.close()  # waits for the shielded write
    led = await backend.open()
    assert await led.balance(key.account_id) == -50_000_000
    assert [r.idempotency_key for r in await led.usage()] == ["bye"]


async def test_settle_survives_caller_cancellation(backend: Backend, ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 1_000_000)
    await ledger.reserve("r", key_id=key.key_id, want_uomcu=TTS_1, ttl_s=30)
    task = asyncio.ensure_future(ledger.settle("r", tts(key.key_id, "bye", chars=1)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await ledger.close()
    led = await backend.open()
    assert await led.balance(key.account_id) == await led.available(key.account_id) == 1_000_000 - TTS_1


async def test_failed_transaction_rolls_back(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 100)

    async def boom(tx: object) -> None:
        await tx.run("UPDATE accounts SET balance_uomcu = 0", ())  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await ledger._write(boom)  # type: ignore[attr-defined]
    assert await ledger.balance(key.account_id) == 100
    assert await ledger.top_up(key.account_id, 1) == 101  # the connection is usable afterwards
