"""What is particular to PostgreSQL: schema versioning, concurrent start-up and
connection errors that never show the password.
"""

from __future__ import annotations

import asyncio
import traceback
from urllib.parse import urlsplit, urlunsplit

import pytest

from speech.errors import ConfigError
from speech.metering import keys as keymod
from speech.metering.factory import open_ledger
from tests.metering.conftest import llm, pg_url, run_in_thread


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


def test_run_in_thread_propagates_errors() -> None:
    async def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        run_in_thread(boom)
