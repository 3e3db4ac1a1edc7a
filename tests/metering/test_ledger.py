"""The ledger interface's own behaviour: reopening, and authenticating API keys.

Every test taking ``ledger`` or ``backend`` runs once per backend (see
``conftest.py``); a second ledger opened with ``backend.open()`` is another
replica on the same database, with its own connections.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from speech.errors import AuthError
from speech.metering.ledger import Ledger
from tests.metering.conftest import Backend, FakeClock

NO_KEY = "000000000000"


# ---------------------------------------------------------------- opening


async def test_reopen_is_idempotent_and_keeps_data(backend: Backend) -> None:
    led = await backend.open()
    secret, key = await led.create_key("alice", 1_000)
    await led.close()
    for _ in range(3):
        led = await backend.open()
        assert (await led.authenticate(secret)).key_id == key.key_id
        assert await led.balance(key.account_id) == 1_000
        await led.close()


# ---------------------------------------------------------------- authenticate


async def test_authenticate_happy_path(ledger: Ledger) -> None:
    secret, key = await ledger.create_key("alice", 42)
    assert await ledger.authenticate(secret) == key


@pytest.mark.parametrize("bad", [None, "", "   "])
async def test_authenticate_missing(ledger: Ledger, bad: str | None) -> None:
    with pytest.raises(AuthError, match="^missing API key$") as info:
        await ledger.authenticate(bad)
    assert info.value.status == 401


async def test_authenticate_invalid(ledger: Ledger) -> None:
    secret, key = await ledger.create_key("alice", 42)
    other_secret, _ = await ledger.create_key("bob", 42)
    unknown = "sk_" + "0" * 12 + secret[15:]
    wrong_secret = secret[:16] + other_secret[16:]  # right key_id, wrong secret
    assert wrong_secret[3:15] == key.key_id
    garbage = ["garbage", "sk_", secret[:-10], secret + "\x00", "x" * 10_000, "Bearer " + secret]
    for bad in [unknown, wrong_secret, *garbage]:
        with pytest.raises(AuthError) as info:
            await ledger.authenticate(bad)
        assert info.value.message == "invalid API key"
        assert secret not in str(info.value) and bad not in str(info.value)


async def test_authenticate_revoked(ledger: Ledger, clock: FakeClock) -> None:
    secret, key = await ledger.create_key("alice", 42)
    clock.tick(60)
    assert await ledger.revoke(key.key_id) is True
    assert await ledger.revoke(key.key_id) is False
    assert await ledger.revoke(NO_KEY) is False
    with pytest.raises(AuthError, match="^API key revoked$"):
        await ledger.authenticate(secret)
    # A wrong secret for a revoked key still says "invalid", not "revoked".
    with pytest.raises(AuthError, match="^invalid API key$"):
        await ledger.authenticate(secret[:16] + "A" * 43)
    stored = await ledger.get_key(key.key_id)
    assert stored is not None
    assert stored.revoked == "2025-01-31T12:01:00.123Z"
    assert not stored.active


async def test_authenticate_expired(ledger: Ledger, clock: FakeClock) -> None:
    secret, key = await ledger.create_key("alice", 42, expires=clock.now + timedelta(seconds=30))
    assert key.expires == "2025-01-31T12:00:30.123Z"
    assert (await ledger.authenticate(secret)).key_id == key.key_id
    clock.tick(29.999)
    await ledger.authenticate(secret)
    clock.tick(0.001)  # expiry is exclusive: at `expires` the key is gone
    with pytest.raises(AuthError, match="^API key expired$") as info:
        await ledger.authenticate(secret)
    assert secret not in str(info.value)
    with pytest.raises(AuthError, match="^invalid API key$"):
        await ledger.authenticate(secret[:16] + "A" * 43)
    # Revoked beats expired.
    await ledger.revoke(key.key_id)
    with pytest.raises(AuthError, match="^API key revoked$"):
        await ledger.authenticate(secret)
