"""SQLite schema of the ledger and its migrations.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes
the database from version ``i`` to ``i + 1``; each runs in one
``BEGIN IMMEDIATE`` transaction together with the ``user_version`` bump, so a
migration is applied completely or not at all, and two processes opening the
same new file do not both apply it. Never edit a released migration: append
a new one. (The PostgreSQL schema has its own list in
:mod:`speech.metering.pg_schema`; the two describe the same tables.)

Money columns are integer µOMCU and carry ``typeof(...) = 'integer'`` checks
so a float can never be stored by mistake (SQLite would otherwise accept
one, and it silently turns an overflowing integer sum into a REAL).
Timestamps are ISO-8601 UTC text with millisecond precision and a ``Z``
(``2025-01-31T12:00:00.123Z``), which sort chronologically as text.

Migrations run with ``foreign_keys`` off (SQLite's documented procedure for
rebuilding a table another table references) and end with a
``PRAGMA foreign_key_check``: any violation aborts the migration.
"""

from __future__ import annotations

import aiosqlite

from speech.errors import ConfigError

_V1 = (
    """
    CREATE TABLE api_keys (
        key_id        TEXT PRIMARY KEY NOT NULL,  -- public part of the key
        key_hash      TEXT NOT NULL,              -- SHA-256 hex of the whole key
        name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        balance_uomcu INTEGER NOT NULL CHECK (typeof(balance_uomcu) = 'integer'),
        created       TEXT NOT NULL,
        revoked       TEXT NULL
    )
    """,
    """
    CREATE TABLE usage (
        id               INTEGER PRIMARY KEY,
        idempotency_key  TEXT NOT NULL UNIQUE,
        key_id           TEXT NOT NULL REFERENCES api_keys (key_id),
        kind             TEXT NOT NULL CHECK (kind IN ('asr', 'tts')),
        provider         TEXT NOT NULL,           -- public route, e.g. 'google'
        engine           TEXT NOT NULL,           -- engine that served it, e.g. 'local'
        audio_ms         INTEGER NULL             -- asr: billed audio
            CHECK (audio_ms IS NULL OR (typeof(audio_ms) = 'integer' AND audio_ms >= 0)),
        received_ms      INTEGER NULL             -- asr: client audio received in the utterance span
            CHECK (received_ms IS NULL OR (typeof(received_ms) = 'integer' AND received_ms >= 0)),
        characters       INTEGER NULL             -- tts: billed characters
            CHECK (characters IS NULL OR (typeof(characters) = 'integer' AND characters >= 0)),
        unit_price_uomcu INTEGER NOT NULL         -- per minute (asr) / per 10^6 chars (tts)
            CHECK (typeof(unit_price_uomcu) = 'integer' AND unit_price_uomcu >= 0),
        cost_uomcu       INTEGER NOT NULL
            CHECK (typeof(cost_uomcu) = 'integer' AND cost_uomcu >= 0),
        created          TEXT NOT NULL,
        CHECK (
            (kind = 'asr' AND audio_ms IS NOT NULL AND characters IS NULL)
            OR (kind = 'tts' AND characters IS NOT NULL AND audio_ms IS NULL AND received_ms IS NULL)
        )
    )
    """,
    "CREATE INDEX usage_by_key ON usage (key_id, id)",
    "CREATE INDEX usage_by_created ON usage (created)",
)

# v2: what the upstream said it billed (ElevenLabs' character-cost header),
# kept beside what we billed so the two can be reconciled.
_V2 = (
    """
    ALTER TABLE usage ADD COLUMN upstream_characters INTEGER NULL
        CHECK (upstream_characters IS NULL
               OR (typeof(upstream_characters) = 'integer' AND upstream_characters >= 0))
    """,
)

# v3: accounts hold the money; keys belong to an account and gain an expiry
# and limits; usage rows name the account; reservations, stream leases and
# rate counters for metering across several gateway replicas.
#
# Each existing key becomes its own account "acct_<key id>" (name = the
# key's name) carrying the key's balance; its usage rows get that account.
# api_keys and usage are rebuilt (SQLite cannot add a NOT NULL foreign key
# column in place); usage ids are kept.
_V3 = (
    """
    CREATE TABLE accounts (
        account_id    TEXT PRIMARY KEY NOT NULL,  -- 'acct_' + 12 hex
        name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        balance_uomcu INTEGER NOT NULL CHECK (typeof(balance_uomcu) = 'integer'),
        created       TEXT NOT NULL
    )
    """,
    """
    INSERT INTO accounts (account_id, name, balance_uomcu, created)
    SELECT 'acct_' || key_id, name, balance_uomcu, created FROM api_keys
    """,
    """
    CREATE TABLE api_keys_v3 (
        key_id      TEXT PRIMARY KEY NOT NULL,    -- public part of the key
        key_hash    TEXT NOT NULL,                -- SHA-256 hex of the whole key
        account_id  TEXT NOT NULL REFERENCES accounts (account_id),
        name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
        created     TEXT NOT NULL,
        revoked     TEXT NULL,
        expires     TEXT NULL,
        max_streams INTEGER NULL
            CHECK (max_streams IS NULL OR (typeof(max_streams) = 'integer' AND max_streams >= 0)),
        rpm         INTEGER NULL
            CHECK (rpm IS NULL OR (typeof(rpm) = 'integer' AND rpm >= 0))
    )
    """,
    """
    INSERT INTO api_keys_v3 (key_id, key_hash, account_id, name, created, revoked)
    SELECT key_id, key_hash, 'acct_' || key_id, name, created, revoked FROM api_keys
    """,
    "DROP TABLE api_keys",
    "ALTER TABLE api_keys_v3 RENAME TO api_keys",
    "CREATE INDEX api_keys_by_account ON api_keys (account_id, created)",
    """
    CREATE TABLE usage_v3 (
        id               INTEGER PRIMARY KEY,
        idempotency_key  TEXT NOT NULL UNIQUE,
        key_id           TEXT NOT NULL REFERENCES api_keys (key_id),
        account_id       TEXT NOT NULL REFERENCES accounts (account_id),
        kind             TEXT NOT NULL CHECK (kind IN ('asr', 'tts')),
        provider         TEXT NOT NULL,
        engine           TEXT NOT NULL,
        audio_ms         INTEGER NULL
            CHECK (audio_ms IS NULL OR (typeof(audio_ms) = 'integer' AND audio_ms >= 0)),
        received_ms      INTEGER NULL
            CHECK (received_ms IS NULL OR (typeof(received_ms) = 'integer' AND received_ms >= 0)),
        characters       INTEGER NULL
            CHECK (characters IS NULL OR (typeof(characters) = 'integer' AND characters >= 0)),
        unit_price_uomcu INTEGER NOT NULL
            CHECK (typeof(unit_price_uomcu) = 'integer' AND unit_price_uomcu >= 0),
        cost_uomcu       INTEGER NOT NULL
            CHECK (typeof(cost_uomcu) = 'integer' AND cost_uomcu >= 0),
        created          TEXT NOT NULL,
        upstream_characters INTEGER NULL
            CHECK (upstream_characters IS NULL
                   OR (typeof(upstream_characters) = 'integer' AND upstream_characters >= 0)),
        CHECK (
            (kind = 'asr' AND audio_ms IS NOT NULL AND characters IS NULL)
            OR (kind = 'tts' AND characters IS NOT NULL AND audio_ms IS NULL AND received_ms IS NULL)
        )
    )
    """,
    """
    INSERT INTO usage_v3 (id, idempotency_key, key_id, account_id, kind, provider, engine, audio_ms, received_ms,
                          characters, unit_price_uomcu, cost_uomcu, created, upstream_characters)
    SELECT id, idempotency_key, key_id, 'acct_' || key_id, kind, provider, engine, audio_ms,
           received_ms, characters, unit_price_uomcu, cost_uomcu, created, upstream_characters
    FROM usage
    """,
    "DROP TABLE usage",
    "ALTER TABLE usage_v3 RENAME TO usage",
    "CREATE INDEX usage_by_key ON usage (key_id, id)",
    "CREATE INDEX usage_by_account ON usage (account_id, id)",
    "CREATE INDEX usage_by_created ON usage (created)",
    """
    CREATE TABLE reservations (
        reservation_id TEXT PRIMARY KEY NOT NULL,
        account_id     TEXT NOT NULL REFERENCES accounts (account_id),
        key_id         TEXT NOT NULL REFERENCES api_keys (key_id),
        amount_uomcu   INTEGER NOT NULL CHECK (typeof(amount_uomcu) = 'integer' AND amount_uomcu >= 0),
        created        TEXT NOT NULL,
        expires        TEXT NOT NULL
    )
    """,
    "CREATE INDEX reservations_by_account ON reservations (account_id, expires)",
    "CREATE INDEX reservations_by_expiry ON reservations (expires)",
    """
    CREATE TABLE stream_leases (
        lease_id TEXT PRIMARY KEY NOT NULL,
        key_id   TEXT NOT NULL REFERENCES api_keys (key_id),
        replica  TEXT NOT NULL,
        expires  TEXT NOT NULL
    )
    """,
    "CREATE INDEX stream_leases_by_key ON stream_leases (key_id, expires)",
    "CREATE INDEX stream_leases_by_expiry ON stream_leases (expires)",
    """
    CREATE TABLE rate_counters (
        key_id       TEXT NOT NULL,
        window_start INTEGER NOT NULL CHECK (typeof(window_start) = 'integer'),  -- epoch minute
        count        INTEGER NOT NULL CHECK (typeof(count) = 'integer'),
        PRIMARY KEY (key_id, window_start)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX rate_counters_by_window ON rate_counters (window_start)",
)

# v4: LLM chat completions ("llm" usage): the model as the client named it,
# input and output tokens, the output price (unit_price_uomcu is then the
# input price, both per million tokens) and whether the token counts are the
# gateway's estimate. SQLite cannot change a CHECK in place, so usage is
# rebuilt once more, keeping every row and id.
_V4 = (
    """
    CREATE TABLE usage_v4 (
        id               INTEGER PRIMARY KEY,
        idempotency_key  TEXT NOT NULL UNIQUE,
        key_id           TEXT NOT NULL REFERENCES api_keys (key_id),
        account_id       TEXT NOT NULL REFERENCES accounts (account_id),
        kind             TEXT NOT NULL CHECK (kind IN ('asr', 'tts', 'llm')),
        provider         TEXT NOT NULL,
        engine           TEXT NOT NULL,
        audio_ms         INTEGER NULL
            CHECK (audio_ms IS NULL OR (typeof(audio_ms) = 'integer' AND audio_ms >= 0)),
        received_ms      INTEGER NULL
            CHECK (received_ms IS NULL OR (typeof(received_ms) = 'integer' AND received_ms >= 0)),
        characters       INTEGER NULL
            CHECK (characters IS NULL OR (typeof(characters) = 'integer' AND characters >= 0)),
        unit_price_uomcu INTEGER NOT NULL         -- per minute (asr) / 10^6 chars (tts) / 10^6 input tokens (llm)
            CHECK (typeof(unit_price_uomcu) = 'integer' AND unit_price_uomcu >= 0),
        cost_uomcu       INTEGER NOT NULL
            CHECK (typeof(cost_uomcu) = 'integer' AND cost_uomcu >= 0),
        created          TEXT NOT NULL,
        upstream_characters INTEGER NULL
            CHECK (upstream_characters IS NULL
                   OR (typeof(upstream_characters) = 'integer' AND upstream_characters >= 0)),
        model            TEXT NULL,               -- llm: as the client named it
        input_tokens     INTEGER NULL
            CHECK (input_tokens IS NULL OR (typeof(input_tokens) = 'integer' AND input_tokens >= 0)),
        output_tokens    INTEGER NULL
            CHECK (output_tokens IS NULL OR (typeof(output_tokens) = 'integer' AND output_tokens >= 0)),
        output_unit_price_uomcu INTEGER NULL      -- llm: per 10^6 output tokens
            CHECK (output_unit_price_uomcu IS NULL
                   OR (typeof(output_unit_price_uomcu) = 'integer' AND output_unit_price_uomcu >= 0)),
        estimated        INTEGER NULL             -- llm: 1 = token counts estimated by the gateway
            CHECK (estimated IS NULL OR estimated IN (0, 1)),
        CHECK (
            (kind = 'asr' AND audio_ms IS NOT NULL AND characters IS NULL
             AND model IS NULL AND input_tokens IS NULL AND output_tokens IS NULL
             AND output_unit_price_uomcu IS NULL AND estimated IS NULL)
            OR (kind = 'tts' AND characters IS NOT NULL AND audio_ms IS NULL AND received_ms IS NULL
                AND model IS NULL AND input_tokens IS NULL AND output_tokens IS NULL
                AND output_unit_price_uomcu IS NULL AND estimated IS NULL)
            OR (kind = 'llm' AND model IS NOT NULL AND input_tokens IS NOT NULL AND output_tokens IS NOT NULL
                AND output_unit_price_uomcu IS NOT NULL AND estimated IS NOT NULL
                AND audio_ms IS NULL AND received_ms IS NULL AND characters IS NULL
                AND upstream_characters IS NULL)
        )
    )
    """,
    """
    INSERT INTO usage_v4 (id, idempotency_key, key_id, account_id, kind, provider, engine, audio_ms, received_ms,
                          characters, unit_price_uomcu, cost_uomcu, created, upstream_characters)
    SELECT id, idempotency_key, key_id, account_id, kind, provider, engine, audio_ms, received_ms,
           characters, unit_price_uomcu, cost_uomcu, created, upstream_characters
    FROM usage
    """,
    "DROP TABLE usage",
    "ALTER TABLE usage_v4 RENAME TO usage",
    "CREATE INDEX usage_by_key ON usage (key_id, id)",
    "CREATE INDEX usage_by_account ON usage (account_id, id)",
    "CREATE INDEX usage_by_created ON usage (created)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def migrate(conn: aiosqlite.Connection) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns that version.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Raises
    :class:`~speech.errors.ConfigError` if the file was written by a newer
    version of the gateway or a migration would break a foreign key.
    """
    version = await _user_version(conn)
    if version == SCHEMA_VERSION:
        return version
    if version > SCHEMA_VERSION:
        raise _too_new(version)
    async with conn.execute("PRAGMA foreign_keys") as cur:
        row = await cur.fetchone()
    foreign_keys = bool(row and row[0])
    # A no-op inside a transaction, so switched here, around it.
    await conn.execute("PRAGMA foreign_keys = OFF")
    try:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the write lock: another process may have migrated.
            version = await _user_version(conn)
            if version > SCHEMA_VERSION:
                raise _too_new(version)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target - 1]:
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {int(target)}")
            async with conn.execute("PRAGMA foreign_key_check") as cur:
                broken = await cur.fetchall()
            if broken:
                raise ConfigError(f"database migration would break {len(broken)} foreign key(s), e.g. {broken[0]!r}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
    finally:
        await conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    return SCHEMA_VERSION


def _too_new(version: int) -> ConfigError:
    return ConfigError(
        f"database schema version {version} is newer than this gateway supports ({SCHEMA_VERSION}); upgrade the gateway"
    )
