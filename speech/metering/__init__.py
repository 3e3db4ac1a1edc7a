"""Accounts, API keys, prices and the ledger.

The package exports nothing itself: import each name from the module that
defines it.

* :mod:`~speech.metering.factory`: ``open_ledger(target)`` opens a ledger, a
  PostgreSQL URL giving a :class:`~speech.metering.postgres.PostgresLedger`
  (several gateway replicas share one database), anything else an SQLite
  file (:class:`~speech.metering.sqlite.SqliteLedger`);
* :mod:`~speech.metering.dsn`: PostgreSQL URLs, and their passwords kept
  out of logs and messages;
* :mod:`~speech.metering.ledger`: the :class:`~speech.metering.ledger.Ledger`
  interface the gateway uses, and ``UNSET``;
* :mod:`~speech.metering.records`: ``Account``, ``ApiKey``, ``UsageIn``,
  ``UsageRecord``, ``DailyUsage``;
* :mod:`~speech.metering.checks`: usage kinds, size limits, validators;
* :mod:`~speech.metering.timestamps`: the clock and the timestamp format;
* :mod:`~speech.metering.keys`: API key format and hashing;
* :mod:`~speech.metering.prices`: the price table, integer µOMCU;
* :mod:`~speech.metering.export`: the usage CSV format;
* :mod:`~speech.metering.sqlcore`: ``SqlLedger``, the ledger's logic in SQL
  both backends share, built from :mod:`~speech.metering.sqlbase` (plumbing),
  :mod:`~speech.metering.sqlaccounts`, :mod:`~speech.metering.sqlmoney`,
  :mod:`~speech.metering.sqlqueries` and :mod:`~speech.metering.sqllimits`;
* :mod:`~speech.metering.sqlite` / :mod:`~speech.metering.schema`: the SQLite
  backend and its migrations; :mod:`~speech.metering.postgres` /
  :mod:`~speech.metering.pg_schema`: the PostgreSQL ones.
"""
