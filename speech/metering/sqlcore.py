"""The ledger's logic, written once in SQL both backends understand.

:class:`SqlLedger` implements every :class:`~speech.metering.ledger.Ledger`
method, by concern in its own module:

* :mod:`speech.metering.sqlaccounts`: accounts and API keys;
* :mod:`speech.metering.sqlmoney`: balances, reservations, recording usage;
* :mod:`speech.metering.sqlqueries`: usage records and daily sums;
* :mod:`speech.metering.sqllimits`: stream leases, request counters, clean-up;

all on top of the primitives a backend provides (:mod:`speech.metering.sqlbase`):
one write transaction, a read connection and a few dialect strings.

Statements use ``?`` placeholders; the PostgreSQL backend numbers them.
Because the SQL is shared, the two backends cannot drift apart in meaning.

Lock order on PostgreSQL, the same in every transaction that takes more than
one lock, so two replicas never deadlock: the account row (or key row for
stream leases) first, then reservation / lease rows, then the usage unique
index. Clean-up deletes and renewals skip rows another transaction holds
(``FOR UPDATE SKIP LOCKED``): expired rows cost nothing while they linger,
because every sum and count only looks at live ones.
"""

from __future__ import annotations

from speech.metering.sqlaccounts import SqlAccounts
from speech.metering.sqllimits import SqlLimits
from speech.metering.sqlmoney import SqlMoney
from speech.metering.sqlqueries import SqlQueries


class SqlLedger(SqlAccounts, SqlMoney, SqlQueries, SqlLimits):
    """Every ledger operation, in SQL shared by the SQLite and PostgreSQL backends.

    A backend subclasses it and implements the primitives of
    :class:`~speech.metering.sqlbase.SqlBase` (``_transact``, ``_reading``,
    ``_in``, ``_list``, ``_close_backend``).
    """


__all__ = ["SqlLedger"]
