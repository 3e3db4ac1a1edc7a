"""Accounts and API keys.

Every test taking ``ledger`` or ``backend`` runs once per backend (see
``conftest.py``); a second ledger opened with ``backend.open()`` is another
replica on the same database, with its own connections.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from speech.metering.keys import hash_key
from speech.metering.ledger import UNSET, Ledger
from speech.metering.records import Account, ApiKey
from tests.metering.conftest import Backend, FakeClock, tts

NO_KEY = "000000000000"
NO_ACCOUNT = "acct_000000000000"


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
