"""PostgreSQL targets and the redaction of their passwords."""

from __future__ import annotations

from speech.metering.dsn import is_postgres_url, redact_target, scrub_secrets


def test_redact_target() -> None:
    assert redact_target("speech.db") == "speech.db"
    assert redact_target("/data/pass:word@x.db") == "/data/pass:word@x.db"
    assert redact_target("postgresql://u:p%40ss@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_target("postgres://u@db/x") == "postgres://u@db/x"
    assert redact_target("postgresql://db/x?user=u&password=hunter2") == "postgresql://db/x?user=u&password=***"
    assert redact_target("POSTGRESQL://u:a@b@db/x") == "POSTGRESQL://u:***@db/x"


def test_is_postgres_url() -> None:
    assert is_postgres_url("postgresql://db/x") and is_postgres_url("  POSTGRES://u@db/x")
    assert not is_postgres_url("speech.db") and not is_postgres_url("/data/postgresql://x.db")
    assert not is_postgres_url("mysql://db/x")


def test_scrub_secrets_removes_every_password_of_the_target() -> None:
    target = "postgresql://u:p%40ss@db:5432/x?sslpassword=k3y&user=u"
    text = f"cannot connect to {target}: password 'p@ss' rejected (p%40ss), key k3y"
    scrubbed = scrub_secrets(text, target)
    assert scrubbed == (
        "cannot connect to postgresql://u:***@db:5432/x?sslpassword=***&user=u: password '***' rejected (***), key ***"
    )
    assert scrub_secrets("no secret here", "speech.db") == "no secret here"
