"""The ledger's behaviour: ONE suite, run against SQLite and PostgreSQL.

Every test taking ``ledger`` or ``backend`` runs once per backend (see
``conftest.py``); a second ledger opened with ``backend.open()`` is another
replica on the same database, with its own connections.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from speech.errors import AuthError, PaymentRequired
from speech.metering.keys import hash_key
from speech.metering.ledger import UNSET, Ledger
from speech.metering.records import Account, ApiKey, UsageIn
from speech.metering.timestamps import format_timestamp, parse_timestamp
from tests.metering.conftest import PRICES, Backend, FakeClock, asr, llm, tts

NO_KEY = "000000000000"
NO_ACCOUNT = "acct_000000000000"
TTS_1 = 30_000  # µOMCU of one elevenlabs character
ERROR_TEXT = "insufficient balance: top up this API key to continue"


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


async def test_close_twice_and_closed_refuses_writes(ledger: Ledger) -> None:
    await ledger.close()
    await ledger.close()
    with pytest.raises(RuntimeError, match="closed"):
        await ledger.create_account("a", 1)


# ---------------------------------------------------------------- accounts


async def test_accounts_crud(ledger: Ledger, clock: FakeClock) -> None:
    assert await ledger.list_accounts() == []
    a = await ledger.create_account("  team a  ", 5_000_000)
    assert re.fullmatch(r"acct_[0-9a-f]{12}", a.account_id)
    assert a == Account(a.account_id, "team a", 5_000_000, "2025-01-31T12:00:00.123Z")
    assert a.to_json() == {
        "account_id": a.account_id,
        "name": "team a",
        "balance": 5.0,
        "balance_uomcu": 5_000_000,
        "created": "2025-01-31T12:00:00.123Z",
    }
    assert str(a.balance) == "5.000000"
    clock.tick()
    b = await ledger.create_account("b", 0)
    assert await ledger.get_account(a.account_id) == a
    assert await ledger.get_account(NO_ACCOUNT) is None
    assert await ledger.list_accounts() == [a, b]
    assert await ledger.balance(b.account_id) == 0
    with pytest.raises(KeyError):
        await ledger.balance(NO_ACCOUNT)
    with pytest.raises(KeyError):
        await ledger.available(NO_ACCOUNT)


@pytest.mark.parametrize(
    ("name", "balance"),
    [
        ("", 0),
        ("   ", 0),
        ("x" * 101, 0),
        ("a\nb", 0),
        ("ok", -1),
        ("ok", 1.5),
        ("ok", True),
        (None, 0),
        ("ok", 10**19),
    ],
)
async def test_create_account_validation(ledger: Ledger, name: object, balance: object) -> None:
    with pytest.raises(ValueError):
        await ledger.create_account(name, balance)  # type: ignore[arg-type]
    assert await ledger.list_accounts() == []


async def test_top_up(ledger: Ledger) -> None:
    acct = await ledger.create_account("a", 100)
    assert await ledger.top_up(acct.account_id, 50) == 150
    with pytest.raises(ValueError, match="exceed"):
        await ledger.top_up(acct.account_id, 10**18)
    assert await ledger.top_up(acct.account_id, -200) == -50  # a correction may go negative
    assert await ledger.balance(acct.account_id) == -50
    assert await ledger.top_up(NO_ACCOUNT, 50) is None
    for bad in (0, 1.5, True, "5"):
        with pytest.raises(ValueError):
            await ledger.top_up(acct.account_id, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="below"):
        await ledger.top_up(acct.account_id, -(10**12))
    assert await ledger.top_up(acct.account_id, -(10**12) + 50) == -(10**12)
    assert await ledger.balance(acct.account_id) == -(10**12)


# ---------------------------------------------------------------- keys


async def test_create_key_in_a_new_account(ledger: Ledger) -> None:
    secret, key = await ledger.create_key("  alice  ", 5_000_000)
    assert secret.startswith("sk_" + key.key_id + "_")
    assert key == ApiKey(key.key_id, key.account_id, "alice", "2025-01-31T12:00:00.123Z")
    assert key.active
    assert await ledger.get_key(key.key_id) == key
    assert await ledger.get_account(key.account_id) == Account(
        key.account_id, "alice", 5_000_000, "2025-01-31T12:00:00.123Z"
    )
    assert key.to_json() == {
        "key_id": key.key_id,
        "account_id": key.account_id,
        "name": "alice",
        "created": "2025-01-31T12:00:00.123Z",
        "revoked": None,
        "expires": None,
        "max_streams": None,
        "rpm": None,
    }


async def test_create_key_in_an_existing_account(ledger: Ledger, clock: FakeClock) -> None:
    acct = await ledger.create_account("team", 1_000)
    _, k1 = await ledger.create_key("ci", account_id=acct.account_id, max_streams=2, rpm=60)
    clock.tick()
    _, k2 = await ledger.create_key(
        "robot", account_id=acct.account_id, expires="2025-02-01T00:00:00+01:00", max_streams=0
    )
    assert (k1.account_id, k1.max_streams, k1.rpm, k1.expires) == (acct.account_id, 2, 60, None)
    assert k2.expires == "2025-01-31T23:00:00.000Z" and k2.max_streams == 0 and k2.rpm is None
    assert await ledger.get_key(k2.key_id) == k2
    assert await ledger.list_keys(acct.account_id) == [k1, k2]
    assert len(await ledger.list_accounts()) == 1  # no account was added
    with pytest.raises(ValueError, match="None"):
        await ledger.create_key("x", 5, account_id=acct.account_id)
    with pytest.raises(ValueError, match="unknown account_id"):
        await ledger.create_key("x", account_id=NO_ACCOUNT)
    with pytest.raises(ValueError, match="required"):
        await ledger.create_key("x")
    assert len(await ledger.list_keys()) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "balance_uomcu": 0},
        {"name": "x" * 101, "balance_uomcu": 0},
        {"name": "a\tb", "balance_uomcu": 0},
        {"name": None, "balance_uomcu": 0},
        {"name": "ok", "balance_uomcu": -1},
        {"name": "ok", "balance_uomcu": 1.5},
        {"name": "ok", "balance_uomcu": True},
        {"name": "ok", "balance_uomcu": 0, "max_streams": -1},
        {"name": "ok", "balance_uomcu": 0, "rpm": 2.5},
        {"name": "ok", "balance_uomcu": 0, "expires": "soon"},
    ],
)
async def test_create_key_validation(ledger: Ledger, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        await ledger.create_key(**kwargs)  # type: ignore[arg-type]
    assert await ledger.list_keys() == []
    assert await ledger.list_accounts() == []


async def test_create_key_name_limit(ledger: Ledger) -> None:
    _, key = await ledger.create_key("x" * 100, 0)
    assert key.name == "x" * 100


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


def test_api_key_active_uses_real_time() -> None:
    past = ApiKey(
        "abcdefabcdef", "acct_abcdefabcdef", "k", "2000-01-01T00:00:00.000Z", expires="2001-01-01T00:00:00.000Z"
    )
    assert not past.active
    assert past.is_active(datetime(2000, 6, 1, tzinfo=UTC))
    assert not past.is_active("2001-01-01T00:00:00Z")
    assert ApiKey("abcdefabcdef", "acct_x", "k", "2000-01-01T00:00:00.000Z").active
    assert not ApiKey("abcdefabcdef", "acct_x", "k", "2000", revoked="2000-01-01T00:00:00.000Z").active


async def test_list_keys(ledger: Ledger, clock: FakeClock) -> None:
    assert await ledger.list_keys() == []
    _, a = await ledger.create_key("a", 1)
    clock.tick()
    _, b = await ledger.create_key("b", 2)
    clock.tick()
    _, c = await ledger.create_key("c", account_id=a.account_id)
    await ledger.revoke(a.key_id)
    keys = await ledger.list_keys()
    assert [k.key_id for k in keys] == [a.key_id, b.key_id, c.key_id]
    assert keys[0].revoked is not None and keys[1].revoked is None
    assert [k.key_id for k in await ledger.list_keys(a.account_id)] == [a.key_id, c.key_id]
    assert await ledger.list_keys(NO_ACCOUNT) == []
    assert await ledger.get_key(NO_KEY) is None


async def test_revoke_within_account(ledger: Ledger) -> None:
    _, a = await ledger.create_key("a", 1)
    _, b = await ledger.create_key("b", 1)
    assert await ledger.revoke(a.key_id, account_id=b.account_id) is False
    assert (await ledger.get_key(a.key_id)).active  # type: ignore[union-attr]
    assert await ledger.revoke(a.key_id, account_id=a.account_id) is True
    assert await ledger.revoke(a.key_id, account_id=a.account_id) is False
    assert not (await ledger.get_key(a.key_id)).active  # type: ignore[union-attr]
    assert (await ledger.get_key(b.key_id)).active  # type: ignore[union-attr]


async def test_update_key_unset_and_none(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 1, expires="2030-01-01T00:00:00Z", max_streams=3, rpm=100)
    assert await ledger.update_key(key.key_id) == key  # nothing to change
    same = await ledger.update_key(key.key_id, expires=UNSET, max_streams=UNSET, rpm=UNSET)
    assert same == key
    k = await ledger.update_key(key.key_id, rpm=None)
    assert k is not None and (k.expires, k.max_streams, k.rpm) == ("2030-01-01T00:00:00.000Z", 3, None)
    k = await ledger.update_key(key.key_id, max_streams=7, expires=None)
    assert k is not None and (k.expires, k.max_streams, k.rpm) == (None, 7, None)
    k = await ledger.update_key(key.key_id, expires=datetime(2031, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    assert k is not None and k.expires == "2031-01-01T00:00:00.000Z"
    assert await ledger.get_key(key.key_id) == k
    assert await ledger.update_key(NO_KEY, rpm=5) is None
    assert await ledger.update_key(NO_KEY) is None
    for bad in ({"rpm": -1}, {"max_streams": "3"}, {"expires": "never"}):
        with pytest.raises(ValueError):
            await ledger.update_key(key.key_id, **bad)  # type: ignore[arg-type]
    assert await ledger.get_key(key.key_id) == k


async def test_inactive_keys(ledger: Ledger, clock: FakeClock) -> None:
    _, live = await ledger.create_key("live", 1)
    _, gone = await ledger.create_key("gone", 1)
    _, soon = await ledger.create_key("soon", 1, expires=clock.now + timedelta(seconds=10))
    await ledger.revoke(gone.key_id)
    assert await ledger.inactive_keys([]) == set()
    assert await ledger.inactive_keys([live.key_id]) == set()
    ids = {live.key_id, gone.key_id, soon.key_id, NO_KEY}
    assert await ledger.inactive_keys(ids) == {gone.key_id, NO_KEY}
    clock.tick(10)
    assert await ledger.inactive_keys(ids) == {gone.key_id, NO_KEY, soon.key_id}
    await ledger.update_key(soon.key_id, expires=None)
    assert await ledger.inactive_keys(tuple(ids)) == {gone.key_id, NO_KEY}


async def test_only_hash_is_stored(backend: Backend, ledger: Ledger) -> None:
    secrets_ = [(await ledger.create_key(f"k{i}", 10))[0] for i in range(3)]
    for s in secrets_:
        key = await ledger.authenticate(s)
        await ledger.record_usage(tts(key.key_id, f"u-{key.key_id}"))
    rows = await backend.fetch("SELECT key_id, key_hash, account_id, name, created FROM api_keys")
    assert len(rows) == 3
    cells = [str(c) for row in rows for c in row]
    for s in secrets_:
        assert hash_key(s) in cells
    await ledger.close()  # SQLite: everything checkpointed or in the WAL on disk
    blob = await backend.stored_bytes()
    for s in secrets_:
        assert s.encode() not in blob
        assert s.split("_", 2)[2].encode() not in blob  # nor the secret part alone


# ---------------------------------------------------------------- reservations


async def test_reserve_grants_the_smaller_of_want_and_available(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 100)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 60
    assert await ledger.available(key.account_id) == 40
    assert await ledger.balance(key.account_id) == 100  # a reservation is not a debit
    assert await ledger.reserve("r2", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 40
    assert await ledger.available(key.account_id) == 0
    with pytest.raises(PaymentRequired) as info:
        await ledger.reserve("r3", key_id=key.key_id, want_uomcu=1, ttl_s=30)
    assert info.value.message == ERROR_TEXT and info.value.status == 402
    with pytest.raises(PaymentRequired):  # a free route still needs available > 0
        await ledger.reserve("r4", key_id=key.key_id, want_uomcu=0, ttl_s=30)
    await ledger.release("r2")
    assert await ledger.available(key.account_id) == 40
    assert await ledger.reserve("r5", key_id=key.key_id, want_uomcu=0, ttl_s=30) == 0
    assert await ledger.available(key.account_id) == 40


async def test_reserve_is_per_account_across_keys(ledger: Ledger) -> None:
    _, k1 = await ledger.create_key("a", 100)
    _, k2 = await ledger.create_key("b", account_id=k1.account_id)
    _, other = await ledger.create_key("c", 100)
    assert await ledger.reserve("r1", key_id=k1.key_id, want_uomcu=70, ttl_s=30) == 70
    assert await ledger.reserve("r2", key_id=k2.key_id, want_uomcu=70, ttl_s=30) == 30
    assert await ledger.reserve("r3", key_id=other.key_id, want_uomcu=70, ttl_s=30) == 70


async def test_reserve_is_idempotent(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 100)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 60
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 60
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=5, ttl_s=30) == 60
    assert await ledger.available(key.account_id) == 40
    # Even when the account is exhausted, the existing grant is returned.
    assert await ledger.reserve("r2", key_id=key.key_id, want_uomcu=100, ttl_s=30) == 40
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=60, ttl_s=30) == 60


async def test_reservation_expiry_frees_credit(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("a", 100)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=100, ttl_s=10) == 100
    with pytest.raises(PaymentRequired):
        await ledger.reserve("r2", key_id=key.key_id, want_uomcu=1, ttl_s=10)
    clock.tick(9.999)
    assert await ledger.available(key.account_id) == 0
    clock.tick(0.001)  # a process killed mid-stream holds nothing forever
    assert await ledger.available(key.account_id) == 100
    assert await ledger.reserve("r2", key_id=key.key_id, want_uomcu=30, ttl_s=10) == 30
    assert await ledger.available(key.account_id) == 70
    # The expired reservation was dropped by reserve; its id can be granted again.
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=10, ttl_s=10) == 10


async def test_renew_pushes_only_live_reservations(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("a", 100)
    await ledger.reserve("r1", key_id=key.key_id, want_uomcu=50, ttl_s=10)
    await ledger.reserve("r2", key_id=key.key_id, want_uomcu=50, ttl_s=5)
    clock.tick(6)  # r2 expired
    await ledger.renew(["r1", "r2", "unknown"], ttl_s=10)
    await ledger.renew([], ttl_s=10)
    assert await ledger.available(key.account_id) == 50
    clock.tick(9)  # r1 would have expired at +10 without the renewal
    assert await ledger.available(key.account_id) == 50
    await ledger.renew(["r1"], ttl_s=0.5)  # never shortens: still ends at +16
    clock.tick(0.9)
    assert await ledger.available(key.account_id) == 50
    clock.tick(0.1)
    assert await ledger.available(key.account_id) == 100
    for bad in (0, -1, 10**9, True, "5"):
        with pytest.raises(ValueError):
            await ledger.renew(["r1"], ttl_s=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await ledger.renew("r1", ttl_s=5)


async def test_reserve_validation(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 100)
    with pytest.raises(ValueError, match="unknown key_id"):
        await ledger.reserve("r", key_id=NO_KEY, want_uomcu=1, ttl_s=5)
    for kwargs in (
        {"key_id": key.key_id, "want_uomcu": -1, "ttl_s": 5},
        {"key_id": key.key_id, "want_uomcu": 1.0, "ttl_s": 5},
        {"key_id": key.key_id, "want_uomcu": 1, "ttl_s": 0},
        {"key_id": key.key_id, "want_uomcu": 1, "ttl_s": float("nan")},
    ):
        with pytest.raises(ValueError):
            await ledger.reserve("r", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await ledger.reserve("", key_id=key.key_id, want_uomcu=1, ttl_s=5)
    assert await ledger.available(key.account_id) == 100


async def test_settle_debits_once_and_frees_the_reservation(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 1_000_000)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=500_000, ttl_s=30) == 500_000
    record, new = await ledger.settle("r1", tts(key.key_id, "u1", chars=11))
    assert new and record is not None and record.cost_uomcu == 330_000
    assert record.account_id == key.account_id and record.to_json()["account_id"] == key.account_id
    assert await ledger.balance(key.account_id) == 670_000
    assert await ledger.available(key.account_id) == 670_000
    again, new_again = await ledger.settle("r1", tts(key.key_id, "u1", chars=11))
    assert new_again is False and again == record
    assert await ledger.balance(key.account_id) == 670_000
    assert [r.idempotency_key for r in await ledger.usage()] == ["u1"]


async def test_settle_duplicate_idempotency_key_from_another_reservation(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 1_000_000)
    await ledger.reserve("r1", key_id=key.key_id, want_uomcu=400_000, ttl_s=30)
    await ledger.reserve("r2", key_id=key.key_id, want_uomcu=400_000, ttl_s=30)
    first, new = await ledger.settle("r1", tts(key.key_id, "same"))
    second, new2 = await ledger.settle("r2", tts(key.key_id, "same", chars=1))  # different content: first wins
    assert new and not new2 and first == second
    assert await ledger.balance(key.account_id) == 1_000_000 - 330_000
    assert await ledger.available(key.account_id) == 1_000_000 - 330_000  # both reservations gone


async def test_settle_after_expiry_and_without_reservation(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("a", 1_000_000)
    await ledger.reserve("r1", key_id=key.key_id, want_uomcu=400_000, ttl_s=5)
    clock.tick(60)
    assert await ledger.expire_stale() == 1
    rec, new = await ledger.settle("r1", tts(key.key_id, "late"))  # the work was done: billed
    assert new and rec is not None
    rec2, new2 = await ledger.settle("never-reserved", tts(key.key_id, "direct"))
    assert new2 and rec2 is not None
    assert await ledger.balance(key.account_id) == 1_000_000 - 2 * 330_000
    assert await ledger.settle("nothing", None) == (None, False)
    with pytest.raises(ValueError, match="unknown key_id"):
        await ledger.settle("r9", tts(NO_KEY, "ghost"))
    assert len(await ledger.usage()) == 2


async def test_settle_without_usage_releases(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 100)
    await ledger.reserve("r1", key_id=key.key_id, want_uomcu=100, ttl_s=30)
    assert await ledger.settle("r1", None) == (None, False)
    assert await ledger.available(key.account_id) == 100
    assert await ledger.balance(key.account_id) == 100
    await ledger.release("r1")  # absent: no-op
    await ledger.release("never")


async def test_settle_can_overrun_the_grant(ledger: Ledger) -> None:
    _, key = await ledger.create_key("a", 10_000)
    assert await ledger.reserve("r1", key_id=key.key_id, want_uomcu=TTS_1, ttl_s=30) == 10_000
    await ledger.settle("r1", tts(key.key_id, "u", chars=1))
    assert await ledger.balance(key.account_id) == 10_000 - TTS_1
    with pytest.raises(PaymentRequired):
        await ledger.reserve("r2", key_id=key.key_id, want_uomcu=0, ttl_s=30)


async def test_expire_stale(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("a", 1_000)
    await ledger.reserve("short", key_id=key.key_id, want_uomcu=1, ttl_s=5)
    await ledger.reserve("long", key_id=key.key_id, want_uomcu=1, ttl_s=500)
    assert await ledger.acquire_stream("l1", key_id=key.key_id, max_streams=5, ttl_s=5, replica="a")
    assert await ledger.acquire_stream("l2", key_id=key.key_id, max_streams=5, ttl_s=500, replica="a")
    now = clock.now.timestamp()
    await ledger.count_request(key.key_id, rpm=10, now_epoch_s=now - 120)  # two windows back: stale
    await ledger.count_request(key.key_id, rpm=10, now_epoch_s=now - 60)  # previous window: kept
    await ledger.count_request(key.key_id, rpm=10, now_epoch_s=now)
    assert await ledger.expire_stale() == 1
    clock.tick(5)
    assert await ledger.expire_stale() == 2
    assert await ledger.expire_stale() == 0
    assert await ledger.available(key.account_id) == 999
    clock.tick(120)
    assert await ledger.expire_stale() == 2  # the two newer windows


# ---------------------------------------------------------------- usage


async def test_record_usage_debits(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 100_000_000)
    rec, new = await ledger.record_usage(asr(key.key_id, "s1:1", ms=1_500, received=1_730))
    assert new is True
    assert rec.cost_uomcu == 1_250_000
    assert await ledger.balance(key.account_id) == 98_750_000
    rec2, new2 = await ledger.record_usage(tts(key.key_id, "t1", chars=11))
    assert new2 and rec2.cost_uomcu == 330_000
    assert await ledger.balance(key.account_id) == 98_420_000
    assert rec.to_json() == {
        "id": rec.id,
        "idempotency_key": "s1:1",
        "key_id": key.key_id,
        "account_id": key.account_id,
        "kind": "asr",
        "provider": "google",
        "engine": "local",
        "quantity": 1.5,
        "unit": "second",
        "unit_price_uomcu": 50_000_000,
        "cost": 1.25,
        "cost_uomcu": 1_250_000,
        "received_seconds": 1.73,
        "upstream_characters": None,
        "created": "2025-01-31T12:00:00.123Z",
    }
    j = rec2.to_json()
    assert (j["kind"], j["quantity"], j["unit"], j["cost"], j["cost_uomcu"]) == ("tts", 11, "character", 0.33, 330_000)
    assert j["received_seconds"] is None
    assert j["unit_price_uomcu"] == 30_000_000_000
    assert str(rec.quantity) == "1.500" and rec2.quantity == 11
    assert str(rec.cost) == "1.250000"
    stored = await ledger.usage()
    assert stored == [rec2, rec]


async def test_record_usage_is_idempotent(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 100_000_000)
    first, new = await ledger.record_usage(asr(key.key_id, "s1:1"))
    assert new
    again, new_again = await ledger.record_usage(asr(key.key_id, "s1:1"))
    assert new_again is False and again == first
    # Same key, different content: the first record wins, nothing is debited.
    other, new_other = await ledger.record_usage(asr(key.key_id, "s1:1", ms=1))
    assert new_other is False and other == first
    assert await ledger.balance(key.account_id) == 50_000_000
    assert len(await ledger.usage()) == 1


async def test_record_usage_concurrent_duplicates(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 100_000_000)
    results = await asyncio.gather(*(ledger.record_usage(asr(key.key_id, "dup")) for _ in range(50)))
    assert sum(new for _, new in results) == 1
    assert len({rec for rec, _ in results}) == 1
    assert await ledger.balance(key.account_id) == 50_000_000
    assert len(await ledger.usage()) == 1


async def test_record_usage_concurrent_distinct(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 0)
    results = await asyncio.gather(*(ledger.record_usage(asr(key.key_id, f"u{i % 25}", ms=1)) for i in range(100)))
    assert sum(new for _, new in results) == 25
    assert await ledger.balance(key.account_id) == -25 * 834
    assert len(await ledger.usage(limit=1000)) == 25


async def test_record_usage_two_replicas(backend: Backend) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("alice", 0)
    calls = [(a if i % 2 else b).record_usage(tts(key.key_id, f"x{i % 10}", chars=1)) for i in range(40)]
    results = await asyncio.gather(*calls)
    assert sum(new for _, new in results) == 10
    assert await a.balance(key.account_id) == await b.balance(key.account_id) == -10 * TTS_1


async def test_balance_may_go_negative(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 1_000)
    await ledger.record_usage(asr(key.key_id, "big", ms=60_000))
    assert await ledger.balance(key.account_id) == 1_000 - 50_000_000


async def test_free_route_records_zero(ledger: Ledger) -> None:
    _, key = await ledger.create_key("alice", 7)
    rec, new = await ledger.record_usage(asr(key.key_id, "free", ms=10_000, route="local"))
    assert new and rec.cost_uomcu == 0 and rec.unit_price_uomcu == 0
    assert await ledger.balance(key.account_id) == 7


async def test_record_usage_revoked_or_expired_key_still_billed(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("alice", 0, expires=clock.now + timedelta(seconds=1))
    await ledger.revoke(key.key_id)
    clock.tick(5)
    _, new = await ledger.record_usage(tts(key.key_id, "late", chars=1, route="riva"))
    assert new
    assert await ledger.balance(key.account_id) == -10_000


async def test_record_usage_unknown_key(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown key_id"):
        await ledger.record_usage(asr(NO_KEY, "x"))
    assert await ledger.usage() == []


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


async def test_usage_filters_and_ordering(ledger: Ledger, clock: FakeClock) -> None:
    _, a = await ledger.create_key("a", 0)
    _, b = await ledger.create_key("b", 0)
    _, a2 = await ledger.create_key("a2", account_id=a.account_id)
    owners = [a, b, a2, a, b, a2]
    for i, owner in enumerate(owners):
        clock.tick(10)
        usage = tts(owner.key_id, f"r{i}", chars=i + 1, route="riva") if i % 3 else asr(owner.key_id, f"r{i}", ms=1)
        await ledger.record_usage(usage)

    async def ids(**kw: object) -> list[str]:
        return [r.idempotency_key for r in await ledger.usage(**kw)]  # type: ignore[arg-type]

    all_ = await ledger.usage()
    assert [r.idempotency_key for r in all_] == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert await ids(limit=2) == ["r5", "r4"]
    assert await ids(key_id=a.key_id) == ["r3", "r0"]
    assert await ids(account_id=a.account_id) == ["r5", "r3", "r2", "r0"]
    assert await ids(account_id=a.account_id, key_id=a2.key_id) == ["r5", "r2"]
    assert await ids(account_id=b.account_id, key_id=a2.key_id) == []
    assert await ids(key_id=b.key_id, limit=1) == ["r4"]
    assert await ids(kind="asr") == ["r3", "r0"]
    assert await ids(kind="tts", account_id=a.account_id) == ["r5", "r2"]
    since = all_[2].created  # r3's time, inclusive
    until = all_[0].created  # r5's time, exclusive
    assert await ids(since=since) == ["r5", "r4", "r3"]
    assert await ids(until=until) == ["r4", "r3", "r2", "r1", "r0"]
    assert await ids(since=since, until=until) == ["r4", "r3"]
    assert await ids(account_id=a.account_id, since=since, until=until) == ["r3"]
    # Offsets are normalised to UTC; datetimes work too.
    plus_one = datetime.fromisoformat(since.replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=1)))
    assert len(await ledger.usage(since=plus_one.isoformat())) == 3
    assert len(await ledger.usage(since=plus_one)) == 3
    assert await ids(key_id=NO_KEY) == []
    assert await ledger.balance(b.account_id) == -(2 + 5) * 10_000
    for bad in (0, -1, 10_001, 1.5):
        with pytest.raises(ValueError):
            await ledger.usage(limit=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ISO-8601"):
        await ledger.usage(since="yesterday")
    with pytest.raises(ValueError, match="ISO-8601"):
        await ledger.usage(until="tomorrow")
    with pytest.raises(ValueError, match="kind"):
        await ledger.usage(kind="stt")  # type: ignore[arg-type]


async def test_llm_usage_is_recorded_with_its_tokens_and_filtered_by_kind(ledger: Ledger, backend: Backend) -> None:
    _, key = await ledger.create_key("robot", 100_000_000)
    await ledger.record_usage(tts(key.key_id, "t1"))
    rec, new = await ledger.record_usage(llm(key.key_id, "llm:1", tokens_in=1000, tokens_out=500))
    est, _ = await ledger.record_usage(
        llm(key.key_id, "llm:2", model="deepseek-chat-x", tokens_in=7, tokens_out=3, estimated=True, route="deepseek")
    )
    assert new and rec.cost_uomcu == 21_000_000  # 1000 x 7 OMCU/M + 500 x 28 OMCU/M
    assert est.cost_uomcu == 18_200  # (7 x 1400 + 3 x 2800) / 10^6 OMCU, in µOMCU
    assert await ledger.balance(key.account_id) == 100_000_000 - 330_000 - 21_000_000 - 18_200
    assert rec.to_json() == {
        "id": rec.id,
        "idempotency_key": "llm:1",
        "key_id": key.key_id,
        "account_id": key.account_id,
        "kind": "llm",
        "provider": "openai",
        "engine": "openai",
        "quantity": 1500,
        "unit": "token",
        "unit_price_uomcu": 7_000_000_000,
        "cost": 21.0,
        "cost_uomcu": 21_000_000,
        "received_seconds": None,
        "upstream_characters": None,
        "created": rec.created,
        "model": "gpt-4o-mini",
        "input_tokens": 1000,
        "output_tokens": 500,
        "output_unit_price_uomcu": 28_000_000_000,
        "estimated": False,
    }
    assert rec.quantity == 1500 and rec.unit == "token"
    stored = await ledger.usage(kind="llm")
    assert stored == [est, rec]
    assert stored[0].estimated is True and stored[1].estimated is False
    assert [r.kind for r in await ledger.usage()] == ["llm", "llm", "tts"]
    # The same event again bills once.
    again, new_again = await ledger.record_usage(llm(key.key_id, "llm:1", tokens_in=1000, tokens_out=500))
    assert not new_again and again == rec
    rows = await backend.fetch("SELECT model, input_tokens, output_tokens, estimated FROM usage ORDER BY id")
    assert [tuple(r) for r in rows][1:] == [("gpt-4o-mini", 1000, 500, False), ("deepseek-chat-x", 7, 3, True)]


async def test_llm_usage_settles_a_reservation(ledger: Ledger) -> None:
    _, key = await ledger.create_key("robot", 50_000_000)
    assert await ledger.reserve("llm:r", key_id=key.key_id, want_uomcu=40_000_000, ttl_s=30) == 40_000_000
    assert await ledger.available(key.account_id) == 10_000_000
    rec, new = await ledger.settle("llm:r", llm(key.key_id, "llm:r", tokens_in=100, tokens_out=10))
    assert new and rec is not None and rec.cost_uomcu == 980_000
    assert await ledger.available(key.account_id) == await ledger.balance(key.account_id) == 49_020_000


# ---------------------------------------------------------------- concurrency across replicas


async def test_concurrent_reserve_and_settle_from_two_replicas(backend: Backend) -> None:
    """50 streams on one account, spread over two gateway replicas: the
    balance never goes below minus one grant, and no record is lost."""
    a = await backend.open()
    b = await backend.open()
    cost = 11 * TTS_1
    start = 10 * cost + cost // 2  # ten full grants, then one partial one
    _, key = await a.create_key("busy", start)
    refused = 0

    async def stream(i: int) -> bool:
        nonlocal refused
        led = a if i % 2 else b
        try:
            await led.reserve(f"res-{i}", key_id=key.key_id, want_uomcu=cost, ttl_s=60)
        except PaymentRequired:
            refused += 1
            return False
        await asyncio.sleep(0)
        record, new = await led.settle(f"res-{i}", tts(key.key_id, f"use-{i}"))
        assert new and record is not None and record.cost_uomcu == cost
        return True

    served = sum(await asyncio.gather(*(stream(i) for i in range(50))))
    assert served + refused == 50
    assert 10 <= served <= 11
    balance = await a.balance(key.account_id)
    assert balance >= -cost
    assert balance == start - served * cost
    assert await b.available(key.account_id) == balance  # no reservation left behind
    assert len(await a.usage(account_id=key.account_id, limit=1000)) == served
    assert await b.usage(limit=1000) == await a.usage(limit=1000)


async def test_concurrent_duplicate_settles_are_exactly_once(backend: Backend) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("dup", 10_000_000)
    await a.reserve("r", key_id=key.key_id, want_uomcu=TTS_1 * 11, ttl_s=60)
    results = await asyncio.gather(*((a if i % 2 else b).settle("r", tts(key.key_id, "once")) for i in range(50)))
    assert sum(new for _, new in results) == 1
    assert len({rec for rec, _ in results}) == 1
    assert await a.balance(key.account_id) == 10_000_000 - 11 * TTS_1
    assert await b.available(key.account_id) == 10_000_000 - 11 * TTS_1
    assert len(await b.usage()) == 1


async def test_concurrent_reservations_never_overbook(backend: Backend) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("busy", 1_000)

    async def take(i: int) -> int:
        try:
            return await (a if i % 2 else b).reserve(f"r{i}", key_id=key.key_id, want_uomcu=30, ttl_s=60)
        except PaymentRequired:
            return -1

    grants = await asyncio.gather(*(take(i) for i in range(50)))
    assert sum(g for g in grants if g > 0) == 1_000
    assert sorted(g for g in grants if g >= 0)[:1] == [10]  # one partial grant of the remainder
    assert grants.count(-1) == 50 - 34
    assert await a.available(key.account_id) == 0


# ---------------------------------------------------------------- stream leases


async def test_stream_limit_holds_across_two_replicas(backend: Backend, clock: FakeClock) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("streams", 1, max_streams=2)
    results = await asyncio.gather(
        *(
            (a if i % 2 else b).acquire_stream(
                f"lease-{i}", key_id=key.key_id, max_streams=2, ttl_s=30, replica="a" if i % 2 else "b"
            )
            for i in range(20)
        )
    )
    assert sum(results) == 2
    granted = [f"lease-{i}" for i, ok in enumerate(results) if ok]
    # Idempotent per lease id, even at the limit.
    assert await a.acquire_stream(granted[0], key_id=key.key_id, max_streams=2, ttl_s=30, replica="a")
    assert not await b.acquire_stream("late", key_id=key.key_id, max_streams=2, ttl_s=30, replica="b")
    await b.release_stream(granted[0])
    await b.release_stream("never-held")
    assert await b.acquire_stream("late", key_id=key.key_id, max_streams=2, ttl_s=30, replica="b")
    assert not await a.acquire_stream("later", key_id=key.key_id, max_streams=2, ttl_s=30, replica="a")
    # Another key has its own slots.
    _, other = await a.create_key("other", 1)
    assert await a.acquire_stream("o1", key_id=other.key_id, max_streams=1, ttl_s=30, replica="a")
    assert not await a.acquire_stream("o2", key_id=other.key_id, max_streams=1, ttl_s=30, replica="a")
    # A bigger limit allows more; zero allows none.
    assert await a.acquire_stream("o2", key_id=other.key_id, max_streams=2, ttl_s=30, replica="a")
    assert not await a.acquire_stream("o3", key_id=other.key_id, max_streams=0, ttl_s=30, replica="a")


async def test_stream_lease_expiry_and_renewal(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("s", 1)
    assert await ledger.acquire_stream("l1", key_id=key.key_id, max_streams=1, ttl_s=10, replica="r1")
    assert not await ledger.acquire_stream("l2", key_id=key.key_id, max_streams=1, ttl_s=10, replica="r1")
    clock.tick(8)
    await ledger.renew_streams(["l1", "unknown"], ttl_s=10)
    await ledger.renew_streams([], ttl_s=10)
    clock.tick(8)  # alive thanks to the renewal
    assert not await ledger.acquire_stream("l2", key_id=key.key_id, max_streams=1, ttl_s=10, replica="r1")
    clock.tick(2)  # a crashed replica's lease runs out by itself
    assert await ledger.acquire_stream("l2", key_id=key.key_id, max_streams=1, ttl_s=10, replica="r1")
    with pytest.raises(ValueError, match="unknown key_id"):
        await ledger.acquire_stream("x", key_id=NO_KEY, max_streams=1, ttl_s=10, replica="r1")
    for kwargs in ({"max_streams": -1}, {"ttl_s": 0}, {"replica": ""}, {"max_streams": 1.5}):
        call = {"key_id": key.key_id, "max_streams": 1, "ttl_s": 10, "replica": "r1", **kwargs}
        with pytest.raises(ValueError):
            await ledger.acquire_stream("y", **call)  # type: ignore[arg-type]


# ---------------------------------------------------------------- rate counters


async def test_rate_counter_fixed_window(ledger: Ledger, clock: FakeClock) -> None:
    _, key = await ledger.create_key("r", 1)
    _, other = await ledger.create_key("o", 1)
    t0 = 1_800_000_000.0  # on a minute boundary
    assert t0 % 60 == 0
    got = [await ledger.count_request(key.key_id, rpm=3, now_epoch_s=t0 + i) for i in range(5)]
    assert got == [(True, 1), (True, 2), (True, 3), (False, 4), (False, 5)]
    assert await ledger.count_request(other.key_id, rpm=3, now_epoch_s=t0 + 59.999) == (True, 1)
    assert await ledger.count_request(key.key_id, rpm=3, now_epoch_s=t0 + 59.999) == (False, 6)
    assert await ledger.count_request(key.key_id, rpm=3, now_epoch_s=t0 + 60) == (True, 1)  # new window
    assert await ledger.count_request(key.key_id, rpm=0, now_epoch_s=t0 + 60) == (False, 2)
    # Without a time, the ledger's clock decides the window.
    assert await ledger.count_request(key.key_id, rpm=3) == (True, 1)
    clock.tick(60)
    assert await ledger.count_request(key.key_id, rpm=3) == (True, 1)
    for bad in ({"rpm": -1}, {"rpm": 1.5}, {"rpm": 1, "now_epoch_s": float("inf")}, {"rpm": 1, "now_epoch_s": "x"}):
        with pytest.raises(ValueError):
            await ledger.count_request(key.key_id, **bad)  # type: ignore[arg-type]


async def test_rate_counter_across_two_replicas(backend: Backend) -> None:
    a = await backend.open()
    b = await backend.open()
    _, key = await a.create_key("r", 1)
    t0 = 1_800_000_000.0
    results = await asyncio.gather(
        *((a if i % 2 else b).count_request(key.key_id, rpm=15, now_epoch_s=t0) for i in range(20))
    )
    assert sorted(count for _, count in results) == list(range(1, 21))
    assert sum(ok for ok, _ in results) == 15


# ---------------------------------------------------------------- values


def test_usage_in_validation() -> None:
    good = dict(
        idempotency_key="i",
        key_id="k",
        kind="asr",
        provider="google",
        engine="local",
        unit_price_uomcu=50_000_000,
        cost_uomcu=834,
        audio_ms=1,
    )
    UsageIn(**good)  # type: ignore[arg-type]
    bad_changes = [
        {"cost_uomcu": 833},  # does not match the unit price
        {"kind": "stt"},
        {"idempotency_key": ""},
        {"idempotency_key": "x" * 201},
        {"provider": ""},
        {"audio_ms": -1, "cost_uomcu": 0},
        {"audio_ms": 1.0},
        {"characters": 5},
        {"received_ms": -1},
        {"kind": "tts"},
    ]
    for change in bad_changes:
        with pytest.raises(ValueError):
            UsageIn(**{**good, **change})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        UsageIn.asr(PRICES, idempotency_key="i", key_id="k", provider="nope", engine="e", audio_ms=1)
    with pytest.raises(ValueError):
        UsageIn.tts(PRICES, idempotency_key="i", key_id="k", provider="riva", engine="e", characters=-1)
    with pytest.raises(ValueError, match="no model, tokens or estimated flag"):
        UsageIn(**{**good, "model": "gpt-4o"})  # type: ignore[arg-type]


def test_llm_usage_in_validation() -> None:
    good = dict(
        idempotency_key="i",
        key_id="k",
        kind="llm",
        provider="openai",
        engine="openai",
        unit_price_uomcu=7_000_000_000,
        cost_uomcu=21_000_000,
        model="gpt-4o-mini",
        input_tokens=1000,
        output_tokens=500,
        output_unit_price_uomcu=28_000_000_000,
        estimated=False,
    )
    UsageIn(**good)  # type: ignore[arg-type]
    bad_changes = [
        {"cost_uomcu": 20_999_999},  # does not match the unit prices and tokens
        {"cost_uomcu": 21_000_001},
        {"model": None},
        {"model": ""},
        {"model": "m" * 201},
        {"model": "bad\nname"},
        {"input_tokens": None},
        {"input_tokens": -1},
        {"output_tokens": 1.5},
        {"output_tokens": True},
        {"output_unit_price_uomcu": None},
        {"estimated": None},
        {"estimated": 1},
        {"audio_ms": 5},
        {"received_ms": 5},
        {"characters": 5},
        {"upstream_characters": 5},
    ]
    for change in bad_changes:
        with pytest.raises(ValueError):
            UsageIn(**{**good, **change})  # type: ignore[arg-type]
    made = UsageIn.llm(
        PRICES,
        idempotency_key="i",
        key_id="k",
        provider="openai",
        engine="openai",
        model="gpt-4o-mini-2024-07-18",
        input_tokens=1000,
        output_tokens=500,
        estimated=True,
    )
    assert (made.unit_price_uomcu, made.output_unit_price_uomcu, made.cost_uomcu) == (7 * 10**9, 28 * 10**9, 21 * 10**6)
    free = UsageIn.llm(
        PRICES,
        idempotency_key="i",
        key_id="k",
        provider="ollama",
        engine="ollama",
        model="llama3.2",
        input_tokens=10**6,
        output_tokens=10**6,
        estimated=False,
        free=True,
    )
    assert (free.unit_price_uomcu, free.output_unit_price_uomcu, free.cost_uomcu) == (0, 0, 0)
    with pytest.raises(ValueError, match="no LLM price for model 'unpriced'"):
        UsageIn.llm(
            PRICES,
            idempotency_key="i",
            key_id="k",
            provider="openai",
            engine="openai",
            model="unpriced",
            input_tokens=1,
            output_tokens=1,
            estimated=False,
        )


def test_timestamps() -> None:
    assert format_timestamp(datetime(2025, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)) == "2025-01-02T03:04:05.678Z"
    assert format_timestamp(datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05.000Z"
    assert parse_timestamp("2025-01-02T04:04:05+01:00") == "2025-01-02T03:04:05.000Z"
    assert parse_timestamp("2025-01-02T03:04:05.5Z") == "2025-01-02T03:04:05.500Z"
    assert parse_timestamp("2025-01-02") == "2025-01-02T00:00:00.000Z"
    with pytest.raises(ValueError):
        parse_timestamp("not a time")
