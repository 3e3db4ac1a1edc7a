"""What is particular to one backend: SQLite pragmas and migrations from the
old single-table schema; PostgreSQL schema versioning and concurrent start-up;
``open_ledger`` and the redaction of database passwords."""

from __future__ import annotations

import asyncio
import sqlite3
import traceback
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from speech.errors import ConfigError, PaymentRequired
from speech.metering import keys as keymod
from speech.metering.dsn import redact_target
from speech.metering.factory import open_ledger
from speech.metering.ledger import Ledger
from speech.metering.schema import MIGRATIONS, SCHEMA_VERSION
from speech.metering.sqlite import SqliteLedger
from tests.metering.conftest import fresh_pg_database, llm, pg_url, run_in_thread, tts


def raw(path: Path | str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


# ---------------------------------------------------------------- SQLite


async def test_sqlite_open_sets_pragmas_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "ledger.db"
    led = await open_ledger(str(path))
    assert isinstance(led, SqliteLedger) and isinstance(led, Ledger)
    conn = led._conn
    assert (await (await conn.execute("PRAGMA journal_mode")).fetchone())[0] == "wal"
    assert (await (await conn.execute("PRAGMA synchronous")).fetchone())[0] == 2  # FULL
    assert (await (await conn.execute("PRAGMA foreign_keys")).fetchone())[0] == 1
    assert (await (await conn.execute("PRAGMA busy_timeout")).fetchone())[0] == 5000
    await led.close()
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 4
    tables = {r[0] for r in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"accounts", "api_keys", "usage", "reservations", "stream_leases", "rate_counters"}


async def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with await SqliteLedger.open(path):
        pass
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    with pytest.raises(ConfigError, match="newer"):
        await SqliteLedger.open(path)


async def test_sqlite_not_a_database_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="garbage.db"):
        await open_ledger(str(path))


async def test_sqlite_in_memory_shares_one_connection() -> None:
    async with await open_ledger(":memory:") as led:
        _, key = await led.create_key("a", 100)
        assert await led.reserve("r", key_id=key.key_id, want_uomcu=100, ttl_s=5) == 100
        with pytest.raises(PaymentRequired):
            await led.reserve("r2", key_id=key.key_id, want_uomcu=1, ttl_s=5)
        assert await led.available(key.account_id) == 0


async def test_sqlite_quantities_and_money_stored_as_integers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with await SqliteLedger.open(path) as led:
        _, key = await led.create_key("a", 0)
        await led.record_usage(tts(key.key_id, "t1", chars=5))
        await led.count_request(key.key_id, rpm=1)
    rows = raw(path, "SELECT typeof(characters), typeof(cost_uomcu), typeof(unit_price_uomcu) FROM usage")
    assert rows == [("integer", "integer", "integer")]
    assert raw(path, "SELECT typeof(balance_uomcu) FROM accounts") == [("integer",)]
    assert raw(path, "SELECT typeof(window_start), typeof(count) FROM rate_counters") == [("integer", "integer")]
    with closing(sqlite3.connect(path)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE accounts SET balance_uomcu = 1.5")


def _old_database(path: Path, version: int) -> tuple[str, str]:
    """A ledger file as schema ``version`` (1, 2 or 3) left it: two keys (one
    revoked) and their usage. Returns the two secrets. (Version 3 is the
    version 2 file migrated by the version 3 migration, as a gateway of that
    version left it.)"""
    alice, bob = keymod.generate_key(), keymod.generate_key()
    a_id, b_id = keymod.parse_key(alice), keymod.parse_key(bob)
    with closing(sqlite3.connect(path)) as conn:
        for migration in MIGRATIONS[: min(version, 2)]:
            for statement in migration:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO api_keys VALUES (?, ?, 'alice', 5000000, '2025-01-01T00:00:00.000Z', NULL)",
            (a_id, keymod.hash_key(alice)),
        )
        conn.execute(
            "INSERT INTO api_keys VALUES (?, ?, 'bob', -30000, '2025-01-02T00:00:00.000Z', '2025-01-03T00:00:00.000Z')",
            (b_id, keymod.hash_key(bob)),
        )
        extra = ", upstream_characters" if version >= 2 else ""
        value = ", 4" if version >= 2 else ""
        conn.execute(
            f"INSERT INTO usage (id, idempotency_key, key_id, kind, provider, engine, characters, unit_price_uomcu, "
            f"cost_uomcu, created{extra}) VALUES (7, 't:1', ?, 'tts', 'riva', 'local', 3, 0, 0, "
            f"'2025-01-01T00:00:01.000Z'{value})",
            (a_id,),
        )
        conn.execute(
            "INSERT INTO usage (id, idempotency_key, key_id, kind, provider, engine, audio_ms, received_ms, "
            "unit_price_uomcu, cost_uomcu, created) VALUES (9, 'a:1', ?, 'asr', 'google', 'local', 600, 700, "
            "50000000, 500, '2025-01-02T00:00:01.000Z')",
            (b_id,),
        )
        if version == 3:
            for statement in MIGRATIONS[2]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    return alice, bob


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_sqlite_old_database_is_migrated_and_keeps_its_data(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.db"
    alice, bob = _old_database(path, version)
    a_id, b_id = keymod.parse_key(alice), keymod.parse_key(bob)
    async with await SqliteLedger.open(path) as led:
        # Each key became its own account, named like it, holding its balance.
        accounts = await led.list_accounts()
        assert [(a.account_id, a.name, a.balance_uomcu, a.created) for a in accounts] == [
            (f"acct_{a_id}", "alice", 5_000_000, "2025-01-01T00:00:00.000Z"),
            (f"acct_{b_id}", "bob", -30_000, "2025-01-02T00:00:00.000Z"),
        ]
        key = await led.authenticate(alice)
        assert key.account_id == f"acct_{a_id}" and key.name == "alice"
        assert (key.expires, key.max_streams, key.rpm) == (None, None, None)
        revoked = await led.get_key(b_id)
        assert revoked is not None and revoked.revoked == "2025-01-03T00:00:00.000Z"
        # Usage kept its ids and content and gained the account.
        records = await led.usage()
        assert [(r.id, r.idempotency_key, r.account_id) for r in records] == [
            (9, "a:1", f"acct_{b_id}"),
            (7, "t:1", f"acct_{a_id}"),
        ]
        assert records[1].upstream_characters == (4 if version >= 2 else None)
        assert (records[0].audio_ms, records[0].received_ms, records[0].cost_uomcu) == (600, 700, 500)
        assert [r.id for r in await led.usage(account_id=f"acct_{a_id}")] == [7]
        # The new tables work, and new ids follow the old ones.
        assert await led.reserve("r", key_id=a_id, want_uomcu=1_000, ttl_s=5) == 1_000
        rec, _ = await led.settle("r", tts(a_id, "new"))
        assert rec is not None and rec.id == 10
        assert await led.balance(f"acct_{a_id}") == 5_000_000 - 330_000
        _, extra = await led.create_key("second", account_id=f"acct_{a_id}")
        assert extra.account_id == f"acct_{a_id}"
        # v4: LLM usage is stored next to the old kinds.
        llm_rec, _ = await led.record_usage(llm(a_id, "chat:1", model="gpt-4o-mini", tokens_in=10, tokens_out=20))
        assert (llm_rec.id, llm_rec.kind, llm_rec.input_tokens, llm_rec.output_tokens) == (11, "llm", 10, 20)
        assert [r.kind for r in await led.usage(kind="llm")] == ["llm"]
        assert (await led.usage(kind="tts"))[-1].model is None
        fk = await (await led._conn.execute("PRAGMA foreign_keys")).fetchone()
        assert fk[0] == 1  # switched back on after the migration
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert raw(path, "PRAGMA foreign_key_check") == []
    assert raw(path, "PRAGMA integrity_check") == [("ok",)]
    # Reopening a migrated file is a no-op.
    async with await SqliteLedger.open(path) as led:
        assert len(await led.list_accounts()) == 2


async def test_sqlite_migration_that_would_break_a_foreign_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _old_database(path, 2)
    with closing(sqlite3.connect(path)) as conn:  # foreign_keys is off by default here
        conn.execute(
            "INSERT INTO usage (idempotency_key, key_id, kind, provider, engine, characters, unit_price_uomcu, "
            "cost_uomcu, created) VALUES ('orphan', 'ffffffffffff', 'tts', 'riva', 'local', 1, 0, 0, 'x')"
        )
        conn.commit()
    with pytest.raises(ConfigError, match="foreign key"):
        await SqliteLedger.open(path)
    assert raw(path, "PRAGMA user_version") == [(2,)]  # rolled back: the file is as it was
    assert len(raw(path, "SELECT * FROM api_keys")) == 2


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_fresh(postgres_available: str):  # type: ignore[no-untyped-def]
    with fresh_pg_database() as url:
        yield url


async def test_postgres_concurrent_opens_of_a_fresh_database(pg_fresh: str) -> None:
    from speech.metering.pg_schema import SCHEMA_VERSION as PG_VERSION
    from speech.metering.postgres import PostgresLedger

    ledgers = await asyncio.gather(*(open_ledger(pg_fresh) for _ in range(4)))
    try:
        assert all(isinstance(led, PostgresLedger) for led in ledgers)
        _, key = await ledgers[0].create_key("a", 10)
        assert await ledgers[3].balance(key.account_id) == 10
    finally:
        for led in ledgers:
            await led.close()

    async def versions() -> list[object]:
        import asyncpg

        conn = await asyncpg.connect(pg_fresh)
        try:
            return [r[0] for r in await conn.fetch("SELECT version FROM schema_version")]
        finally:
            await conn.close()

    assert await versions() == [PG_VERSION] == [2]
    # Reopening is a no-op.
    led = await open_ledger(pg_fresh)
    await led.close()
    assert await versions() == [2]


async def test_postgres_version_1_database_is_migrated_and_keeps_its_data(pg_fresh: str) -> None:
    import asyncpg

    from speech.metering.pg_schema import MIGRATIONS as PG_MIGRATIONS

    secret = keymod.generate_key()
    key_id = keymod.parse_key(secret)
    conn = await asyncpg.connect(pg_fresh)
    try:
        async with conn.transaction():
            for statement in PG_MIGRATIONS[0]:
                await conn.execute(statement)
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO schema_version (version) VALUES (1)")
            await conn.execute("INSERT INTO accounts VALUES ('acct_a', 'alice', 5000000, '2025-01-01T00:00:00.000Z')")
            await conn.execute(
                "INSERT INTO api_keys (key_id, key_hash, account_id, name, created) "
                "VALUES ($1, $2, 'acct_a', 'alice', '2025-01-01T00:00:00.000Z')",
                key_id,
                keymod.hash_key(secret),
            )
            await conn.execute(
                "INSERT INTO usage (idempotency_key, key_id, account_id, kind, provider, engine, characters, "
                "unit_price_uomcu, cost_uomcu, created, upstream_characters) "
                "VALUES ('t:1', $1, 'acct_a', 'tts', 'riva', 'local', 3, 0, 0, '2025-01-01T00:00:01.000Z', 4)",
                key_id,
            )
    finally:
        await conn.close()
    async with await open_ledger(pg_fresh) as led:
        (old,) = await led.usage()
        assert (old.id, old.kind, old.characters, old.upstream_characters, old.model) == (1, "tts", 3, 4, None)
        rec, _ = await led.record_usage(llm(key_id, "chat:1", model="deepseek-chat", tokens_in=1000, tokens_out=10))
        assert (rec.id, rec.estimated, rec.cost_uomcu) == (2, False, 1_400_000 + 28_000)
        assert [r.idempotency_key for r in await led.usage(kind="llm")] == ["chat:1"]
        assert await led.balance("acct_a") == 5_000_000 - 1_428_000
    conn = await asyncpg.connect(pg_fresh)
    try:
        assert await conn.fetchval("SELECT version FROM schema_version") == 2
        with pytest.raises(asyncpg.exceptions.CheckViolationError):  # the new shape check holds
            await conn.execute("UPDATE usage SET model = 'x' WHERE kind = 'tts'")
    finally:
        await conn.close()


async def test_postgres_newer_schema_is_refused(pg_fresh: str) -> None:
    import asyncpg

    led = await open_ledger(pg_fresh)
    await led.close()
    conn = await asyncpg.connect(pg_fresh)
    try:
        await conn.execute("UPDATE schema_version SET version = 99")
    finally:
        await conn.close()
    with pytest.raises(ConfigError, match="newer"):
        await open_ledger(pg_fresh)


async def test_postgres_open_ledger_accepts_both_schemes(pg_fresh: str) -> None:
    from speech.metering.postgres import PostgresLedger

    for url in (pg_fresh, pg_fresh.replace("postgresql://", "postgres://", 1)):
        led = await open_ledger(url)
        assert isinstance(led, PostgresLedger)
        await led.close()


async def test_postgres_missing_database_is_config_error(postgres_available: str) -> None:
    parts = urlsplit(pg_url("no_such_ledger_db"))
    user = parts.username or "postgres"
    host = f"{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit((parts.scheme, f"{user}:Sup3rSecretPw@{host}", parts.path, parts.query, ""))
    with pytest.raises(ConfigError) as info:
        await open_ledger(url)
    text = "".join(traceback.format_exception(info.value))
    assert "no_such_ledger_db" in info.value.message
    assert "Sup3rSecretPw" not in text


async def test_postgres_unreachable_server_is_config_error_without_password() -> None:
    pytest.importorskip("asyncpg")
    url = "postgresql://gateway:Sup3r%2FSecret@127.0.0.1:1/ledger?sslmode=disable"
    with pytest.raises(ConfigError) as info:
        await open_ledger(url)
    message = info.value.message
    assert message.startswith("cannot open PostgreSQL ledger postgresql://gateway:***@127.0.0.1:1/ledger")
    text = "".join(traceback.format_exception(info.value))
    assert "Sup3r" not in text and "Secret" not in text


async def test_open_ledger_refuses_an_empty_target() -> None:
    for bad in ("", "   "):
        with pytest.raises(ConfigError, match="not set"):
            await open_ledger(bad)


def test_redact_target() -> None:
    assert redact_target("speech.db") == "speech.db"
    assert redact_target("/data/pass:word@x.db") == "/data/pass:word@x.db"
    assert redact_target("postgresql://u:p%40ss@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_target("postgres://u@db/x") == "postgres://u@db/x"
    assert redact_target("postgresql://db/x?user=u&password=hunter2") == "postgresql://db/x?user=u&password=***"
    assert redact_target("POSTGRESQL://u:a@b@db/x") == "POSTGRESQL://u:***@db/x"


def test_run_in_thread_propagates_errors() -> None:
    async def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        run_in_thread(boom)
