"""The ``speech`` command line.

    speech serve [--host H] [--port P] [--workers N] [--db PATH] [--config FILE]
    speech accounts create --name N [--balance OMCU] | accounts list | accounts top-up ACCOUNT_ID --amount OMCU
    speech keys create --name N (--balance OMCU | --account ACCOUNT_ID) [--expires T] [--max-streams N] [--rpm N]
    speech keys list [--account ID] | keys limits KEY_ID [...] | keys revoke KEY_ID | keys top-up KEY_ID --amount OMCU
    speech usage [--account ID] [--key KEY_ID] [--kind asr|tts|llm] [--since T] [--until T] [--limit N] [--csv]
    speech transcribe FILE [--url URL] [--api-key KEY]
    speech say "text" -o out.wav [--format NAME]

Errors print one line to stderr and exit 2 (usage / configuration) or 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from speech.errors import ConfigError, SpeechError
from speech.metering.checks import KINDS
from speech.settings import Settings, load_settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="speech", description="OpenMind-compatible speech gateway")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", metavar="FILE", help="TOML settings file")
        sp.add_argument("--db", metavar="PATH", help="ledger database (default speech.db)")

    s = sub.add_parser("serve", help="run the gateway")
    common(s)
    s.add_argument("--host", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8080; 0 picks a free one)")
    s.add_argument("--workers", type=int, help="gateway processes sharing the port (default 1; one per core)")

    a = sub.add_parser("accounts", help="manage accounts (they hold the balance)")
    asub = a.add_subparsers(dest="accounts_command", required=True, metavar="ACTION")
    ac = asub.add_parser("create", help="create an account")
    common(ac)
    ac.add_argument("--name", required=True)
    ac.add_argument("--balance", default="0", help="starting balance in OMCU")
    al = asub.add_parser("list", help="list accounts and balances")
    common(al)
    at = asub.add_parser("top-up", help="add OMCU to an account (negative corrects)")
    common(at)
    at.add_argument("account_id")
    at.add_argument("--amount", required=True, help="OMCU to add, e.g. 100 or -2.5")

    def key_limits(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--expires", help="ISO-8601 expiry, e.g. 2027-01-31T00:00:00Z ('none' removes it)")
        sp.add_argument("--max-streams", help="concurrent streams allowed ('none' = unlimited)")
        sp.add_argument("--rpm", help="requests (and new streams) per minute ('none' = unlimited)")

    k = sub.add_parser("keys", help="manage API keys")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    kc = ksub.add_parser("create", help="create a key; prints it once, alone on the last line")
    common(kc)
    kc.add_argument("--name", required=True)
    kc.add_argument("--balance", help="starting balance in OMCU of a new account for this key")
    kc.add_argument("--account", help="add the key to this existing account instead")
    key_limits(kc)
    kl = ksub.add_parser("list", help="list keys (ids, accounts, limits; never the secrets)")
    common(kl)
    kl.add_argument("--account", help="only this account's keys")
    km = ksub.add_parser("limits", help="change a key's expiry and limits")
    common(km)
    km.add_argument("key_id")
    key_limits(km)
    kr = ksub.add_parser("revoke", help="revoke a key by its id (its streams close on every gateway)")
    common(kr)
    kr.add_argument("key_id")
    kt = ksub.add_parser("top-up", help="add OMCU to the account of a key (or an account id)")
    common(kt)
    kt.add_argument("key_id")
    kt.add_argument("--amount", required=True, help="OMCU to add")

    u = sub.add_parser("usage", help="show usage records, newest first")
    common(u)
    u.add_argument("--account", help="only this account")
    u.add_argument("--key", dest="key_id", help="only this key id")
    u.add_argument("--kind", choices=KINDS)
    u.add_argument("--since", help="ISO-8601 time, inclusive")
    u.add_argument("--until", help="ISO-8601 time, exclusive")
    u.add_argument("--limit", type=int, default=50)
    u.add_argument("--csv", action="store_true", help="write CSV to stdout")

    t = sub.add_parser("transcribe", help="stream a WAV file to a running gateway in real time")
    t.add_argument("file")
    t.add_argument("--url", default="ws://127.0.0.1:8080/api/core/local/asr")
    t.add_argument("--api-key", help="API key (default: $SPEECH_API_KEY)")
    t.add_argument("--speed", type=float, default=1.0, help="pace multiplier (1 = real time)")

    y = sub.add_parser("say", help="synthesize speech with the local engine")
    y.add_argument("text")
    y.add_argument("-o", "--output", required=True, help="output file")
    y.add_argument("--format", help="output_format (default from the extension: wav_22050 / mp3_44100_128)")
    y.add_argument("--config", metavar="FILE")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"speech: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except SpeechError as exc:
        print(f"speech: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "server.db": getattr(args, "db", None),
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "server.workers": getattr(args, "workers", None),
    }


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), overrides=_overrides(args))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from speech.cli.serve import serve

        return serve(_settings(args), getattr(args, "config", None), _overrides(args))
    if args.command in ("accounts", "keys", "usage"):
        from speech.cli import admin

        return asyncio.run(admin.run(args, _settings(args)))
    if args.command == "transcribe":
        from speech.cli.transcribe import transcribe

        key = args.api_key or os.environ.get("SPEECH_API_KEY", "")
        return asyncio.run(transcribe(args.file, args.url, key, args.speed))
    if args.command == "say":
        from speech.cli.say import say

        return say(args.text, args.output, args.format, _settings(args))
    raise AssertionError(args.command)  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
