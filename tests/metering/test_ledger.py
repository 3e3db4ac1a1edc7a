import asyncio
import pathlib
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone

import pytest

from speech.errors import AuthError, ConfigError
from speech.metering.keys import hash_key
from speech.metering.ledger import (
    ApiKey,
    Ledger,
    SqliteLedger,
    UsageIn,
    format_timestamp,
    parse_timestamp,
)
from speech.metering.prices import PriceTable
from speech.metering.schema import SCHEMA_VERSION
from speech.settings import PriceSettings

PRICES = PriceTable.from_settings(PriceSettings())


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def ledger(tmp_path, clock):
    led = await SqliteLedger.open(tmp_path / "ledger.db", clock=clock)
    yield led
    await led.close()


def asr(key_id: str, idem: str, ms: int = 60_000, route: str = "google", received: int | None = None):
    return UsageIn.asr(
        PRICES,
        idempotency_key=idem,
        key_id=key_id,
        provider=route,
        engine="local",
        audio_ms=ms,
        received_ms=received if received is not None else ms,
    )


def tts(key_id: str, idem: str, chars: int = 11, route: str = "elevenlabs"):
    return UsageIn.tts(PRICES, idempotency_key=idem, key_id=key_id, provider=route, engine="local", characters=chars)


def raw(path, sql, params=()):
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


# ---------------------------------------------------------------- opening


async def test_open_sets_pragmas_and_schema(tmp_path):
    path = tmp_path / "sub" / "dir" / "ledger.db"
    led = await SqliteLedger.open(path)
    assert isinstance(led, Ledger)
    await led.close()
    assert path.exists()
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 2
    tables = {r[0] for r in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"api_keys", "usage"} <= tables


async def test_connection_pragmas(ledger):
    conn = ledger._conn
    assert (await (await conn.execute("PRAGMA journal_mode")).fetchone())[0] == "wal"
    assert (await (await conn.execute("PRAGMA synchronous")).fetchone())[0] == 2  # FULL
    assert (await (await conn.execute("PRAGMA foreign_keys")).fetchone())[0] == 1
    assert (await (await conn.execute("PRAGMA busy_timeout")).fetchone())[0] == 5000


async def test_reopen_is_idempotent_and_keeps_data(tmp_path):
    path = tmp_path / "ledger.db"
    async with await SqliteLedger.open(path) as led:
        secret, key = await led.create_key("alice", 1_000)
    for _ in range(3):
        async with await SqliteLedger.open(path) as led:
            assert (await led.authenticate(secret)).key_id == key.key_id
            assert await led.balance(key.key_id) == 1_000
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "ledger.db"
    async with await SqliteLedger.open(path):
        pass
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    with pytest.raises(ConfigError, match="newer"):
        await SqliteLedger.open(path)


async def test_not_a_database_is_config_error(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="garbage.db"):
        await SqliteLedger.open(path)


async def test_close_twice(tmp_path):
    led = await SqliteLedger.open(tmp_path / "x.db")
    await led.close()
    await led.close()


# ---------------------------------------------------------------- keys


async def test_create_key(ledger, clock):
    secret, key = await ledger.create_key("  alice  ", 5_000_000)
    assert secret.startswith("sk_" + key.key_id + "_")
    assert key == ApiKey(key.key_id, "alice", 5_000_000, "2025-01-31T12:00:00.123Z", None)
    assert key.active
    assert await ledger.get_key(key.key_id) == key
    assert key.to_json() == {
        "key_id": key.key_id,
        "name": "alice",
        "balance": 5.0,
        "balance_uomcu": 5_000_000,
        "created": "2025-01-31T12:00:00.123Z",
        "revoked": None,
    }


@pytest.mark.parametrize(
    ("name", "balance"),
    [("", 0), ("   ", 0), ("x" * 101, 0), ("a\nb", 0), ("ok", -1), ("ok", 1.5), ("ok", True), (None, 0)],
)
async def test_create_key_validation(ledger, name, balance):
    with pytest.raises(ValueError):
        await ledger.create_key(name, balance)
    assert await ledger.list_keys() == []


async def test_create_key_name_limits(ledger):
    _, key = await ledger.create_key("x" * 100, 0)
    assert key.name == "x" * 100


async def test_only_hash_is_stored(tmp_path):
    path = tmp_path / "ledger.db"
    async with await SqliteLedger.open(path) as led:
        secrets_ = [(await led.create_key(f"k{i}", 10))[0] for i in range(3)]
        for s in secrets_:
            await led.authenticate(s)
    rows = raw(path, "SELECT * FROM api_keys")
    assert len(rows) == 3
    cells = [str(c) for row in rows for c in row]
    for s in secrets_:
        assert all(s not in c for c in cells)
        assert all(s.split("_", 2)[2] not in c for c in cells)  # nor the secret part alone
        assert hash_key(s) in cells
    # Nor anywhere in the file (main db + WAL), as bytes.
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for s in secrets_:
        assert s.encode() not in blob
        assert s.split("_", 2)[2].encode() not in blob


async def test_authenticate_happy_path(ledger):
    secret, key = await ledger.create_key("alice", 42)
    assert await ledger.authenticate(secret) == key


@pytest.mark.parametrize("bad", [None, "", "   "])
async def test_authenticate_missing(ledger, bad):
    with pytest.raises(AuthError, match="^missing API key$") as info:
        await ledger.authenticate(bad)
    assert info.value.status == 401


async def test_authenticate_invalid(ledger):
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


async def test_authenticate_revoked(ledger, clock):
    secret, key = await ledger.create_key("alice", 42)
    clock.tick(60)
    assert await ledger.revoke(key.key_id) is True
    assert await ledger.revoke(key.key_id) is False
    assert await ledger.revoke("nope") is False
    with pytest.raises(AuthError, match="^API key revoked$"):
        await ledger.authenticate(secret)
    # A wrong secret for a revoked key still says "invalid", not "revoked".
    with pytest.raises(AuthError, match="^invalid API key$"):
        await ledger.authenticate(secret[:16] + "A" * 43)
    stored = await ledger.get_key(key.key_id)
    assert stored is not None
    assert stored.revoked == "2025-01-31T12:01:00.123Z"
    assert not stored.active


async def test_list_keys(ledger, clock):
    assert await ledger.list_keys() == []
    _, a = await ledger.create_key("a", 1)
    clock.tick()
    _, b = await ledger.create_key("b", 2)
    await ledger.revoke(a.key_id)
    keys = await ledger.list_keys()
    assert [k.key_id for k in keys] == [a.key_id, b.key_id]
    assert keys[0].revoked is not None and keys[1].revoked is None
    assert await ledger.get_key("000000000000") is None


async def test_top_up_and_balance(ledger):
    _, key = await ledger.create_key("alice", 100)
    assert await ledger.balance(key.key_id) == 100
    assert await ledger.top_up(key.key_id, 50) == 150
    assert await ledger.balance(key.key_id) == 150
    assert await ledger.top_up("000000000000", 50) is None
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError):
            await ledger.top_up(key.key_id, bad)
    with pytest.raises(ValueError, match="exceed"):
        await ledger.top_up(key.key_id, 10**18)
    assert await ledger.balance(key.key_id) == 150
    with pytest.raises(KeyError):
        await ledger.balance("000000000000")


# ---------------------------------------------------------------- usage


async def test_record_usage_debits(ledger, clock):
    _, key = await ledger.create_key("alice", 100_000_000)
    rec, new = await ledger.record_usage(asr(key.key_id, "s1:1", ms=1_500, received=1_730))
    assert new is True
    assert rec.cost_uomcu == 1_250_000
    assert await ledger.balance(key.key_id) == 98_750_000
    rec2, new2 = await ledger.record_usage(tts(key.key_id, "t1", chars=11))
    assert new2 and rec2.cost_uomcu == 330_000
    assert await ledger.balance(key.key_id) == 98_420_000

    assert rec.to_json() == {
        "id": rec.id,
        "idempotency_key": "s1:1",
        "key_id": key.key_id,
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
    assert (j["kind"], j["quantity"], j["unit"], j["cost"], j["cost_uomcu"]) == (
        "tts",
        11,
        "character",
        0.33,
        330_000,
    )
    assert j["received_seconds"] is None
    assert j["unit_price_uomcu"] == 30_000_000_000
    assert str(rec.quantity) == "1.500" and rec2.quantity == 11
    assert str(rec.cost) == "1.250000"


async def test_record_usage_is_idempotent(ledger):
    _, key = await ledger.create_key("alice", 100_000_000)
    first, new = await ledger.record_usage(asr(key.key_id, "s1:1"))
    assert new
    again, new_again = await ledger.record_usage(asr(key.key_id, "s1:1"))
    assert new_again is False
    assert again == first
    # Same key, different content: the first record wins, nothing is debited.
    other, new_other = await ledger.record_usage(asr(key.key_id, "s1:1", ms=1))
    assert new_other is False and other == first
    assert await ledger.balance(key.key_id) == 50_000_000
    assert len(await ledger.usage()) == 1


async def test_record_usage_concurrent_duplicates(ledger):
    _, key = await ledger.create_key("alice", 100_000_000)
    results = await asyncio.gather(*(ledger.record_usage(asr(key.key_id, "dup")) for _ in range(50)))
    assert sum(new for _, new in results) == 1
    assert len({rec for rec, _ in results}) == 1
    assert await ledger.balance(key.key_id) == 50_000_000
    assert len(await ledger.usage()) == 1


async def test_record_usage_concurrent_distinct(ledger):
    _, key = await ledger.create_key("alice", 0)
    results = await asyncio.gather(*(ledger.record_usage(asr(key.key_id, f"u{i % 25}", ms=1)) for i in range(100)))
    assert sum(new for _, new in results) == 25
    assert await ledger.balance(key.key_id) == -25 * 834
    assert len(await ledger.usage(limit=1000)) == 25


async def test_record_usage_two_connections(tmp_path):
    path = tmp_path / "ledger.db"
    a = await SqliteLedger.open(path)
    b = await SqliteLedger.open(path)
    try:
        _, key = await a.create_key("alice", 0)
        calls = [(a if i % 2 else b).record_usage(tts(key.key_id, f"x{i % 10}", chars=1)) for i in range(40)]
        results = await asyncio.gather(*calls)
        assert sum(new for _, new in results) == 10
        assert await a.balance(key.key_id) == await b.balance(key.key_id) == -10 * 30_000
    finally:
        await a.close()
        await b.close()


async def test_balance_may_go_negative(ledger):
    _, key = await ledger.create_key("alice", 1_000)
    await ledger.record_usage(asr(key.key_id, "big", ms=60_000))
    assert await ledger.balance(key.key_id) == 1_000 - 50_000_000


async def test_free_route_records_zero(ledger):
    _, key = await ledger.create_key("alice", 7)
    rec, new = await ledger.record_usage(asr(key.key_id, "free", ms=10_000, route="local"))
    assert new and rec.cost_uomcu == 0 and rec.unit_price_uomcu == 0
    assert await ledger.balance(key.key_id) == 7


async def test_record_usage_revoked_key_still_billed(ledger):
    _, key = await ledger.create_key("alice", 0)
    await ledger.revoke(key.key_id)
    _, new = await ledger.record_usage(tts(key.key_id, "late", chars=1, route="riva"))
    assert new
    assert await ledger.balance(key.key_id) == -10_000


async def test_record_usage_unknown_key(ledger):
    with pytest.raises(ValueError, match="unknown key_id"):
        await ledger.record_usage(asr("000000000000", "x"))
    assert await ledger.usage() == []


async def test_record_usage_survives_caller_cancellation(ledger):
    _, key = await ledger.create_key("alice", 0)
    task = asyncio.ensure_future(ledger.record_usage(asr(key.key_id, "bye")))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await ledger.close()  # waits for the shielded write
    # reopen to check
    led = await SqliteLedger.open(ledger.path)
    try:
        assert await led.balance(key.key_id) == -50_000_000
        assert [r.idempotency_key for r in await led.usage()] == ["bye"]
    finally:
        await led.close()


async def test_failed_transaction_rolls_back(ledger):
    _, key = await ledger.create_key("alice", 100)
    with pytest.raises(RuntimeError):
        async with ledger._write() as conn:
            await conn.execute("UPDATE api_keys SET balance_uomcu = 0")
            raise RuntimeError("boom")
    assert await ledger.balance(key.key_id) == 100
    # The connection is usable afterwards.
    assert await ledger.top_up(key.key_id, 1) == 101


async def test_usage_ordering_limit_filters(ledger, clock):
    _, a = await ledger.create_key("a", 0)
    _, b = await ledger.create_key("b", 0)
    for i in range(6):
        clock.tick(10)
        owner = a if i % 2 == 0 else b
        await ledger.record_usage(tts(owner.key_id, f"r{i}", chars=i + 1, route="riva"))
    all_ = await ledger.usage()
    assert [r.idempotency_key for r in all_] == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert [r.idempotency_key for r in await ledger.usage(limit=2)] == ["r5", "r4"]
    assert [r.idempotency_key for r in await ledger.usage(a.key_id)] == ["r4", "r2", "r0"]
    assert [r.idempotency_key for r in await ledger.usage(b.key_id, limit=1)] == ["r5"]
    since = all_[2].created  # r3, inclusive
    assert [r.idempotency_key for r in await ledger.usage(since=since)] == ["r5", "r4", "r3"]
    assert [r.idempotency_key for r in await ledger.usage(a.key_id, since=since)] == ["r4"]
    # Offsets are normalised to UTC.
    plus_one = datetime.fromisoformat(since.replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=1)))
    assert len(await ledger.usage(since=plus_one.isoformat())) == 3
    assert len(await ledger.usage(since=plus_one)) == 3
    assert await ledger.usage(key_id="000000000000") == []
    assert await ledger.balance(a.key_id) == -(1 + 3 + 5) * 10_000
    for bad in (0, -1, 10_001):
        with pytest.raises(ValueError):
            await ledger.usage(limit=bad)
    with pytest.raises(ValueError, match="ISO-8601"):
        await ledger.usage(since="yesterday")


async def test_quantities_stored_as_integers(tmp_path):
    path = tmp_path / "ledger.db"
    async with await SqliteLedger.open(path) as led:
        _, key = await led.create_key("a", 0)
        await led.record_usage(asr(key.key_id, "a1", ms=1_234, received=1_500))
        await led.record_usage(tts(key.key_id, "t1", chars=5))
    rows = raw(
        path,
        "SELECT typeof(audio_ms), typeof(received_ms), typeof(characters), typeof(cost_uomcu), "
        "typeof(unit_price_uomcu) FROM usage ORDER BY id",
    )
    assert rows == [
        ("integer", "integer", "null", "integer", "integer"),
        ("null", "null", "integer", "integer", "integer"),
    ]


async def test_schema_rejects_float_money(tmp_path):
    path = tmp_path / "ledger.db"
    async with await SqliteLedger.open(path) as led:
        _, key = await led.create_key("a", 0)
    with closing(sqlite3.connect(path)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE api_keys SET balance_uomcu = 1.5 WHERE key_id = ?", (key.key_id,))


# ---------------------------------------------------------------- UsageIn


def test_usage_in_validation():
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
    UsageIn(**good)
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
            UsageIn(**{**good, **change})
    with pytest.raises(ValueError):
        UsageIn.asr(PRICES, idempotency_key="i", key_id="k", provider="nope", engine="e", audio_ms=1)
    with pytest.raises(ValueError):
        UsageIn.tts(PRICES, idempotency_key="i", key_id="k", provider="riva", engine="e", characters=-1)


def test_timestamps():
    assert format_timestamp(datetime(2025, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)) == "2025-01-02T03:04:05.678Z"
    assert format_timestamp(datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05.000Z"
    assert parse_timestamp("2025-01-02T04:04:05+01:00") == "2025-01-02T03:04:05.000Z"
    assert parse_timestamp("2025-01-02T03:04:05.5Z") == "2025-01-02T03:04:05.500Z"
    assert parse_timestamp("2025-01-02") == "2025-01-02T00:00:00.000Z"
    with pytest.raises(ValueError):
        parse_timestamp("not a time")


async def test_version_1_database_is_migrated_and_keeps_its_records(tmp_path: "pathlib.Path") -> None:
    """A ledger written by schema v1 opens under v2: data kept, new column null."""
    import sqlite3

    from speech.metering.schema import MIGRATIONS

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO api_keys VALUES ('abcdefabcdef', 'h', 'old', 5, '2025-01-01T00:00:00.000Z', NULL)")
    conn.execute(
        "INSERT INTO usage (idempotency_key, key_id, kind, provider, engine, characters, unit_price_uomcu, "
        "cost_uomcu, created) VALUES ('t:1', 'abcdefabcdef', 'tts', 'riva', 'local', 3, 0, 0, "
        "'2025-01-01T00:00:01.000Z')"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    ledger = await SqliteLedger.open(path)
    try:
        (record,) = await ledger.usage()
        assert record.characters == 3 and record.upstream_characters is None
        assert await ledger.balance("abcdefabcdef") == 5
    finally:
        await ledger.close()
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(2,)]
