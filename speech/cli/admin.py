"""``speech keys ...`` and ``speech usage``: ledger administration."""

from __future__ import annotations

import argparse

from speech.errors import ConfigError
from speech.metering import open_ledger
from speech.metering.ledger import Ledger
from speech.metering.prices import format_omcu, parse_omcu
from speech.settings import Settings


def _omcu(text: str, what: str) -> int:
    try:
        return parse_omcu(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from exc


async def run(args: argparse.Namespace, settings: Settings) -> int:
    ledger = await open_ledger(settings.server.db)
    try:
        if args.command == "usage":
            return await _usage(ledger, args)
        action = args.keys_command
        if action == "create":
            balance = _omcu(args.balance, "--balance")
            try:
                key, info = await ledger.create_key(args.name, balance)
            except ValueError as exc:
                raise ConfigError(f"--name: {exc}") from exc
            print(
                f"created key {info.key_id} ({info.name}) in account {info.account_id} "
                f"with balance {format_omcu(balance)} OMCU"
            )
            print("this is the only time the key is shown; store it now:")
            print(key)
            return 0
        if action == "list":
            keys = await ledger.list_keys()
            balances = {a.account_id: a.balance_uomcu for a in await ledger.list_accounts()}
            print(f"{'KEY_ID':<14} {'ACCOUNT_ID':<19} {'NAME':<24} {'BALANCE_OMCU':>16}  {'CREATED':<25} STATUS")
            for k in keys:
                if k.revoked:
                    status = f"revoked {k.revoked}"
                elif not k.active:
                    status = f"expired {k.expires}"
                else:
                    status = "active"
                balance_text = format_omcu(balances.get(k.account_id, 0))
                print(f"{k.key_id:<14} {k.account_id:<19} {k.name:<24} {balance_text:>16}  {k.created:<25} {status}")
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
    finally:
        await ledger.close()


async def _usage(ledger: Ledger, args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= 10000:
        raise ConfigError("--limit must be between 1 and 10000")
    records = await ledger.usage(key_id=args.key_id, limit=args.limit)
    print(
        f"{'CREATED':<25} {'KEY_ID':<14} {'KIND':<4} {'PROVIDER':<11} {'ENGINE':<8} {'QUANTITY':>12} {'COST_OMCU':>12}"
    )
    for r in records:
        qty = f"{r.quantity}s" if r.kind == "asr" else f"{r.quantity}ch"
        print(
            f"{r.created:<25} {r.key_id:<14} {r.kind:<4} {r.provider:<11} {r.engine:<8} "
            f"{qty:>12} {format_omcu(r.cost_uomcu):>12}"
        )
    return 0
