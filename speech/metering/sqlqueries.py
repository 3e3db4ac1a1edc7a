"""Usage queries in SQL: the records, filtered, and their sums per day.

Part of :class:`~speech.metering.sqlcore.SqlLedger`; reads only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from speech.metering.checks import MAX_ID_LENGTH, MAX_USAGE_LIMIT, Kind, check_int, check_kind, check_label
from speech.metering.records import DailyUsage, UsageRecord
from speech.metering.sqlbase import USAGE_COLUMNS, SqlBase, row_to_usage
from speech.metering.timestamps import parse_timestamp


class SqlQueries(SqlBase):
    """The usage queries of :class:`~speech.metering.ledger.Ledger`."""

    async def usage(
        self,
        *,
        account_id: str | None = None,
        key_id: str | None = None,
        kind: Kind | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        limit: int = 100,
    ) -> list[UsageRecord]:
        check_int(limit, "limit", minimum=1, maximum=MAX_USAGE_LIMIT)
        where: list[str] = []
        params: list[Any] = []
        if account_id is not None:
            where.append("account_id = ?")
            params.append(account_id)
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if kind is not None:
            check_kind(kind)
            where.append("kind = ?")
            params.append(kind)
        if since is not None:
            where.append("created >= ?")
            params.append(parse_timestamp(since))
        if until is not None:
            where.append("created < ?")
            params.append(parse_timestamp(until))
        sql = f"SELECT {USAGE_COLUMNS} FROM usage"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [row_to_usage(r) for r in await self._read_all(sql, params)]

    async def usage_by_day(
        self, *, account_id: str, since: str | datetime, until: str | datetime | None = None
    ) -> list[DailyUsage]:
        check_label(account_id, "account_id", MAX_ID_LENGTH)
        # Timestamps are fixed-width ISO text, so the UTC day is their first 10 characters.
        sql = (
            "SELECT SUBSTR(created, 1, 10) AS day, kind, COUNT(*), SUM(audio_ms), SUM(characters), SUM(cost_uomcu) "
            "FROM usage WHERE account_id = ? AND created >= ?"
        )
        params: list[Any] = [account_id, parse_timestamp(since)]
        if until is not None:
            sql += " AND created < ?"
            params.append(parse_timestamp(until))
        sql += " GROUP BY SUBSTR(created, 1, 10), kind ORDER BY day, kind"
        return [
            DailyUsage(
                day=str(r[0]),
                kind=str(r[1]),
                records=int(r[2]),
                audio_ms=None if r[3] is None else int(r[3]),
                characters=None if r[4] is None else int(r[4]),
                cost_uomcu=int(r[5]),
            )
            for r in await self._read_all(sql, params)
        ]


__all__ = ["SqlQueries"]
