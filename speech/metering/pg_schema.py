"""PostgreSQL schema of the ledger and its migrations.

The schema version lives in a one-row table ``schema_version``.
``MIGRATIONS[i]`` takes the database from version ``i`` to ``i + 1``. All
pending migrations run in one transaction together with the version bump
(PostgreSQL DDL is transactional), under ``pg_advisory_xact_lock``, so two
gateway replicas starting at once against a fresh database do not race: the
second waits, then finds the work done. Never edit a released migration:
append a new one.

The tables mean the same as in the SQLite schema
(:mod:`speech.metering.schema`): money is ``BIGINT`` µOMCU; timestamps are
the same fixed-width ISO-8601 UTC text, with ``COLLATE "C"`` so they compare
byte-wise (chronologically) whatever the database's default collation.
"""

from __future__ import annotations

from typing import Any

from speech.errors import ConfigError

# Key of the advisory lock that serialises migrations (any constant bigint;
# this one is b"speechmt" read as an integer, to stay clear of other users).
MIGRATION_LOCK_KEY = int.from_bytes(b"speechmt", "big") & 0x7FFF_FFFF_FFFF_FFFF

_V1 = (
    """
    CREATE TABLE accounts (
        account_id    TEXT COLLATE "C" PRIMARY KEY,
        name          TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
        balance_uomcu BIGINT NOT NULL,
        created       TEXT COLLATE "C" NOT NULL
    )
    """,
    """
    CREATE TABLE api_keys (
        key_id      TEXT COLLATE "C" PRIMARY KEY,       -- public part of the key
        key_hash    TEXT NOT NULL,                      -- SHA-256 hex of the whole key
        account_id  TEXT COLLATE "C" NOT NULL REFERENCES accounts (account_id),
        name        TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
        created     TEXT COLLATE "C" NOT NULL,
        revoked     TEXT COLLATE "C" NULL,
        expires     TEXT COLLATE "C" NULL,
        max_streams INTEGER NULL CHECK (max_streams >= 0),
        rpm         INTEGER NULL CHECK (rpm >= 0)
    )
    """,
    "CREATE INDEX api_keys_by_account ON api_keys (account_id, created)",
    """
    CREATE TABLE usage (
        id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        idempotency_key     TEXT COLLATE "C" NOT NULL UNIQUE,
        key_id              TEXT COLLATE "C" NOT NULL REFERENCES api_keys (key_id),
        account_id          TEXT COLLATE "C" NOT NULL REFERENCES accounts (account_id),
        kind                TEXT NOT NULL CHECK (kind IN ('asr', 'tts')),
        provider            TEXT NOT NULL,
        engine              TEXT NOT NULL,
        audio_ms            BIGINT NULL CHECK (audio_ms >= 0),
        received_ms         BIGINT NULL CHECK (received_ms >= 0),
        characters          BIGINT NULL CHECK (characters >= 0),
        unit_price_uomcu    BIGINT NOT NULL CHECK (unit_price_uomcu >= 0),
        cost_uomcu          BIGINT NOT NULL CHECK (cost_uomcu >= 0),
        created             TEXT COLLATE "C" NOT NULL,
        upstream_characters BIGINT NULL CHECK (upstream_characters >= 0),
        CHECK (
            (kind = 'asr' AND audio_ms IS NOT NULL AND characters IS NULL)
            OR (kind = 'tts' AND characters IS NOT NULL AND audio_ms IS NULL AND received_ms IS NULL)
        )
    )
    """,
    "CREATE INDEX usage_by_key ON usage (key_id, id)",
    "CREATE INDEX usage_by_account ON usage (account_id, id)",
    "CREATE INDEX usage_by_created ON usage (created)",
    """
    CREATE TABLE reservations (
        reservation_id TEXT COLLATE "C" PRIMARY KEY,
        account_id     TEXT COLLATE "C" NOT NULL REFERENCES accounts (account_id),
        key_id         TEXT COLLATE "C" NOT NULL REFERENCES api_keys (key_id),
        amount_uomcu   BIGINT NOT NULL CHECK (amount_uomcu >= 0),
        created        TEXT COLLATE "C" NOT NULL,
        expires        TEXT COLLATE "C" NOT NULL
    )
    """,
    "CREATE INDEX reservations_by_account ON reservations (account_id, expires)",
    "CREATE INDEX reservations_by_expiry ON reservations (expires)",
    """
    CREATE TABLE stream_leases (
        lease_id TEXT COLLATE "C" PRIMARY KEY,
        key_id   TEXT COLLATE "C" NOT NULL REFERENCES api_keys (key_id),
        replica  TEXT NOT NULL,
        expires  TEXT COLLATE "C" NOT NULL
    )
    """,
    "CREATE INDEX stream_leases_by_key ON stream_leases (key_id, expires)",
    "CREATE INDEX stream_leases_by_expiry ON stream_leases (expires)",
    """
    CREATE TABLE rate_counters (
        key_id       TEXT COLLATE "C" NOT NULL,
        window_start BIGINT NOT NULL,               -- epoch minute
        count        INTEGER NOT NULL,
        PRIMARY KEY (key_id, window_start)
    )
    """,
    "CREATE INDEX rate_counters_by_window ON rate_counters (window_start)",
)

# v2: LLM chat completions ("llm" usage): model, input / output tokens, the
# output price (unit_price_uomcu is then the input price, both per million
# tokens) and whether the token counts are the gateway's estimate. The
# constraint names are the ones PostgreSQL gave v1's unnamed checks.
_V2 = (
    "ALTER TABLE usage DROP CONSTRAINT usage_kind_check",
    "ALTER TABLE usage DROP CONSTRAINT usage_check",
    """
    ALTER TABLE usage
        ADD COLUMN model TEXT NULL,
        ADD COLUMN input_tokens BIGINT NULL CHECK (input_tokens >= 0),
        ADD COLUMN output_tokens BIGINT NULL CHECK (output_tokens >= 0),
        ADD COLUMN output_unit_price_uomcu BIGINT NULL CHECK (output_unit_price_uomcu >= 0),
        ADD COLUMN estimated BOOLEAN NULL
    """,
    "ALTER TABLE usage ADD CONSTRAINT usage_kind_check CHECK (kind IN ('asr', 'tts', 'llm'))",
    """
    ALTER TABLE usage ADD CONSTRAINT usage_check CHECK (
        (kind = 'asr' AND audio_ms IS NOT NULL AND characters IS NULL
         AND model IS NULL AND input_tokens IS NULL AND output_tokens IS NULL
         AND output_unit_price_uomcu IS NULL AND estimated IS NULL)
        OR (kind = 'tts' AND characters IS NOT NULL AND audio_ms IS NULL AND received_ms IS NULL
            AND model IS NULL AND input_tokens IS NULL AND output_tokens IS NULL
            AND output_unit_price_uomcu IS NULL AND estimated IS NULL)
        OR (kind = 'llm' AND model IS NOT NULL AND input_tokens IS NOT NULL AND output_tokens IS NOT NULL
            AND output_unit_price_uomcu IS NOT NULL AND estimated IS NOT NULL
            AND audio_ms IS NULL AND received_ms IS NULL AND characters IS NULL AND upstream_characters IS NULL)
    )
    """,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(conn: Any) -> int:
    """Bring the database behind the asyncpg connection ``conn`` to
    :data:`SCHEMA_VERSION`; returns that version.

    Raises :class:`~speech.errors.ConfigError` if the database was written by
    a newer version of the gateway.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = await conn.fetchval("SELECT max(version) FROM schema_version")
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"database schema version {version} is newer than this gateway supports ({SCHEMA_VERSION}); "
                "upgrade the gateway"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target - 1]:
                await conn.execute(statement)
            await conn.execute("UPDATE schema_version SET version = $1", target)
    return SCHEMA_VERSION
