"""SQLite schema of the ledger and its migrations.

The schema version lives in ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes
the database from version ``i`` to ``i + 1``; each runs in one
``BEGIN IMMEDIATE`` transaction together with the ``user_version`` bump, so a
migration is applied completely or not at all, and two processes opening the
same new file do not both apply it. Never edit a released migration: append
a new one.

Money columns are integer µOMCU and carry ``typeof(...) = 'integer'`` checks
so a float can never be stored by mistake (SQLite would otherwise accept
one, and it silently turns an overflowing integer sum into a REAL).
Timestamps are ISO-8601 UTC text with millisecond precision and a ``Z``
(``2025-01-31T12:00:00.123Z``), which sort chronologically as text.
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

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)
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
    version of the gateway.
    """
    version = await _user_version(conn)
    if version == SCHEMA_VERSION:
        return version
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"database schema version {version} is newer than this gateway supports "
            f"({SCHEMA_VERSION}); upgrade the gateway"
        )
    await conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read inside the write lock: another process may have migrated.
        version = await _user_version(conn)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target - 1]:
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {int(target)}")
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
