"""``speech accounts ...``, ``speech keys ...`` and ``speech usage``: ledger
administration, working on the database directly (``--db`` or the settings'
``server.db``, SQLite or PostgreSQL). This is the operator's way in when no
admin token is configured."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from speech.errors import ConfigError
from speech.metering.export import usage_csv
from speech.metering.factory import open_ledger
from speech.metering.ledger import UNSET, Ledger
from speech.metering.prices import format_omcu, parse_omcu
from speech.settings import Settings


def _omcu(text: str, what: str, *, allow_negative: bool = False) -> int:
    negative = allow_negative and text.strip().startswith("-")
    try:
        micro = parse_omcu(text.strip().lstrip("-") if negative else text)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from exc
    return -micro if negative else micro


def _limit(value: str | None, what: str) -> Any:
    """A limit flag: absent -> UNSET, "none" -> None (no limit), else a positive int or a time."""
    if value is None:
        return UNSET
    if value.lower() == "none":
        return None
    if what == "--expires":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"{what} must be a positive integer or 'none'")
    return number


def _key_options(args: argparse.Namespace, *, partial: bool) -> dict[str, Any]:
    out = {
        "expires": _limit(args.expires, "--expires"),
        "max_streams": _limit(args.max_streams, "--max-streams"),
        "rpm": _limit(args.rpm, "--rpm"),
    }
    if not partial:
        out = {k: (None if v is UNSET else v) for k, v in out.items()}
    return out


async def run(args: argparse.Namespace, settings: Settings) -> int:
    ledger = await open_ledger(settings.server.db)
    try:
        if args.command == "usage":
            return await _usage(ledger, args)
        if args.command == "accounts":
            return await _accounts(ledger, args)
        return await _keys(ledger, args)
    except ValueError as exc:  # the ledger's own validation (names, times, amounts)
        raise ConfigError(str(exc)) from exc
    finally:
        await ledger.close()


async def _accounts(ledger: Ledger, args: argparse.Namespace) -> int:
    action = args.accounts_command
    if action == "create":
        account = await ledger.create_account(args.name, _omcu(args.balance, "--balance"))
        print(f"created account {account.account_id} ({account.name}) with {format_omcu(account.balance_uomcu)} OMCU")
        return 0
    if action == "list":
        print(f"{'ACCOUNT_ID':<19} {'NAME':<24} {'BALANCE_OMCU':>16}  CREATED")
        for a in await ledger.list_accounts():
            print(f"{a.account_id:<19} {a.name:<24} {format_omcu(a.balance_uomcu):>16}  {a.created}")
        return 0
    if action == "top-up":
        amount = _omcu(args.amount, "--amount", allow_negative=True)
        if amount == 0:
            raise ConfigError("--amount must not be 0")
        new = await ledger.top_up(args.account_id, amount)
        if new is None:
            print(f"speech: no account with id {args.account_id}")
            return 1
        print(f"{args.account_id} balance is now {format_omcu(new)} OMCU")
        return 0
    raise AssertionError(action)  # pragma: no cover


async def _keys(ledger: Ledger, args: argparse.Namespace) -> int:
    action = args.keys_command
    if action == "create":
        options = _key_options(args, partial=False)
        if args.account:
            if args.balance is not None:
                raise ConfigError("give --balance or --account, not both (the balance belongs to the account)")
            if await ledger.get_account(args.account) is None:
                raise ConfigError(f"--account: no account with id {args.account}")
            key, info = await ledger.create_key(args.name, account_id=args.account, **options)
        else:
            if args.balance is None:
                raise ConfigError("--balance is required when the key gets a new account (or give --account)")
            balance = _omcu(args.balance, "--balance")
            try:
                key, info = await ledger.create_key(args.name, balance, **options)
            except ValueError as exc:
                raise ConfigError(f"--name: {exc}") from exc
        account = await ledger.get_account(info.account_id)
        assert account is not None
        print(
            f"created key {info.key_id} ({info.name}) in account {info.account_id} "
            f"with balance {format_omcu(account.balance_uomcu)} OMCU"
        )
        print("this is the only time the key is shown; store it now:")
        print(key)
        return 0
    if action == "list":
        keys = await ledger.list_keys(args.account)
        balances = {a.account_id: a.balance_uomcu for a in await ledger.list_accounts()}
        print(f"{'KEY_ID':<14} {'ACCOUNT_ID':<19} {'NAME':<20} {'BALANCE_OMCU':>14}  {'LIMITS':<24} STATUS")
        for k in keys:
            if k.revoked:
                status = f"revoked {k.revoked}"
            elif not k.active:
                status = f"expired {k.expires}"
            else:
                status = "active" + (f" until {k.expires}" if k.expires else "")
            limits = f"streams={k.max_streams or '-'} rpm={k.rpm or '-'}"
            balance_text = format_omcu(balances.get(k.account_id, 0))
            print(f"{k.key_id:<14} {k.account_id:<19} {k.name:<20} {balance_text:>14}  {limits:<24} {status}")
        return 0
    if action == "limits":
        updated = await ledger.update_key(args.key_id, **_key_options(args, partial=True))
        if updated is None:
            print(f"speech: no key with id {args.key_id}")
            return 1
        print(
            f"{updated.key_id}: expires={updated.expires or 'never'} "
            f"max_streams={updated.max_streams or 'unlimited'} rpm={updated.rpm or 'unlimited'}"
        )
        return 0
    if action == "revoke":
        if await ledger.revoke(args.key_id):
            print(f"revoked {args.key_id}")
            return 0
        print(f"speech: no active key with id {args.key_id}")
        return 1
    if action == "top-up":
        # KEY_ID tops up the key's account; an account id works too.
        amount = _omcu(args.amount, "--amount")
        if amount == 0:
            raise ConfigError("--amount must be more than 0")
        account_id = args.key_id
        if not account_id.startswith("acct_"):
            key = await ledger.get_key(args.key_id)
            if key is None:
                print(f"speech: no key with id {args.key_id}")
                return 1
            account_id = key.account_id
        new = await ledger.top_up(account_id, amount)
        if new is None:
            print(f"speech: no account with id {account_id}")
            return 1
        print(f"{args.key_id} balance is now {format_omcu(new)} OMCU (account {account_id})")
        return 0
    raise AssertionError(action)  # pragma: no cover


QUANTITY_SUFFIX = {"asr": "s", "tts": "ch", "llm": "tok"}


async def _usage(ledger: Ledger, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10000:
        raise ConfigError("--limit must be between 1 and 10000")
    records = await ledger.usage(
        account_id=args.account,
        key_id=args.key_id,
        kind=args.kind,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    if args.csv:
        sys.stdout.write(usage_csv(r.to_json() for r in records))
        return 0
    print(
        f"{'CREATED':<25} {'KEY_ID':<14} {'KIND':<4} {'PROVIDER':<11} {'ENGINE':<10} {'QUANTITY':>12} {'COST_OMCU':>12}"
        " MODEL"
    )
    for r in records:
        qty = f"{r.quantity}{QUANTITY_SUFFIX[r.kind]}"
        if r.kind == "llm":  # input+output tokens; "~" marks the gateway's estimate
            qty = f"{'~' if r.estimated else ''}{r.input_tokens}+{r.output_tokens}tok"
        line = (
            f"{r.created:<25} {r.key_id:<14} {r.kind:<4} {r.provider:<11} {r.engine:<10} "
            f"{qty:>12} {format_omcu(r.cost_uomcu):>12}"
        )
        print(f"{line} {r.model}" if r.model else line)
    return 0
