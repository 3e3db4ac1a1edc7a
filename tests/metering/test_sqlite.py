"""What is particular to SQLite: pragmas, in-memory databases, integer storage and the
migrations from the old single-table schema.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from speech.errors import ConfigError, PaymentRequired
from speech.metering import keys as keymod
from speech.metering.factory import open_ledger
from speech.metering.ledger import Ledger
from speech.metering.schema import MIGRATIONS, SCHEMA_VERSION
from speech.metering.sqlite import SqliteLedger
from tests.metering.conftest import llm, tts


def raw(path: Path | str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


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
