"""``modelport tokens create|list|revoke``: personal access tokens in ``<state_dir>/auth.db``.

Light on purpose (no MLflow, no server stack): it runs in a fraction of a second, next to a running server, which
sees a new or revoked token within ``auth.refresh_s``. ``create`` prints the secret, and only it, on stdout.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson

from server.ops.authdb import AuthDB
from server.ops.identity import Level
from server.ops.tokens import TokenInfo, TokenStore
from server.settings import Settings

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def add_parser(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:  # type: ignore[type-arg]
    """``modelport tokens ...`` with ``common`` flags (``--state-dir``, ``--config``, ...) on each subcommand."""
    tokens = sub.add_parser("tokens", help="create, list and revoke access tokens (auth.db in the state dir)")
    actions = tokens.add_subparsers(dest="tokens_command", required=True)
    create = actions.add_parser("create", help="create a token and print it (shown only this once)")
    create.add_argument("name", help="a unique name for the token (revoke it by this name)")
    create.add_argument("--admin", action="store_true", help="may do everything, on every model and endpoint")
    create.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="TARGET=LEVEL",
        help="TARGET: an endpoint or model name, models:/NAME, endpoints/NAME or *; "
        "LEVEL: CAN_VIEW, CAN_QUERY or CAN_MANAGE (repeatable)",
    )
    create.add_argument("--expires-in", metavar="DURATION", help="e.g. 30d, 12h, 90m, 3600s (default: never)")
    create.add_argument("--principal", help="who the token names (default: NAME); ACLs apply to this name")
    create.add_argument("--service-principal", action="store_true", help="the principal is a service principal")
    common(create)
    listing = actions.add_parser("list", help="the tokens (never their secrets)")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    common(listing)
    revoke = actions.add_parser("revoke", help="delete a token (running servers stop accepting it within seconds)")
    revoke.add_argument("name")
    common(revoke)


def run(args: argparse.Namespace, settings: Settings) -> int:
    handler = {"create": _create, "list": _list, "revoke": _revoke}[args.tokens_command]
    try:
        return handler(args, settings)
    except (OSError, sqlite3.Error) as exc:  # an unwritable state dir, a locked or corrupt auth.db: one clear line
        print(f"modelport: {settings.auth_db}: {exc}", file=sys.stderr)
        return 1


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``3600`` (seconds) → seconds; ``ValueError`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text.lower())
    if match is None or int(match[1]) <= 0:
        raise ValueError(f"invalid duration {text!r}; use e.g. 30d, 12h, 90m, 3600s or 3600 (seconds)")
    return float(int(match[1]) * _UNITS[match[2]])


def parse_grants(items: Sequence[str]) -> dict[str, Level]:
    """``["fraud=CAN_QUERY", "*=view"]`` → ``{"fraud": Level.CAN_QUERY, "*": Level.CAN_VIEW}``."""
    grants: dict[str, Level] = {}
    for item in items:
        target, sep, level = item.rpartition("=")
        target = target.strip()
        if not sep or not target:
            raise ValueError(f"invalid --grant {item!r}; use ENDPOINT_OR_MODEL=LEVEL, e.g. fraud_detector=CAN_QUERY")
        grants[target] = Level.parse(level)
    return grants


def _create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        grants = parse_grants(args.grant)
        expires_in = None if args.expires_in is None else parse_duration(args.expires_in)
        if args.principal is not None and not args.principal.strip():
            raise ValueError("--principal must not be empty")
        db = AuthDB(settings.auth_db)
        try:
            secret = TokenStore(db).create(
                args.name,
                principal=args.principal,
                kind="service_principal" if args.service_principal else "user",
                admin=args.admin,
                grants=grants,
                expires_in_s=expires_in,
            )
        finally:
            db.close()
    except ValueError as exc:
        print(f"modelport: {exc}", file=sys.stderr)
        return 2
    print(secret)
    if not args.admin and not grants:
        print(
            f"modelport: token {args.name!r} has no --admin or --grant: it may do only what ACLs give "
            f"{args.principal or args.name!r}",
            file=sys.stderr,
        )
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    infos: list[TokenInfo] = []
    if settings.auth_db.exists():  # listing never creates the state dir
        db = AuthDB(settings.auth_db)
        try:
            infos = TokenStore(db).list()
        finally:
            db.close()
    if args.json:
        print(orjson.dumps([info.as_json() for info in infos]).decode())
        return 0
    if not infos:
        print(f"no tokens in {settings.auth_db}")
        return 0
    now_ms = int(time.time() * 1000)
    rows = [("NAME", "PRINCIPAL", "KIND", "ADMIN", "GRANTS", "CREATED", "LAST USED", "EXPIRES")]
    for info in infos:
        expires = _when(info.expires_ms, "never")
        if info.expires_ms is not None and info.expires_ms <= now_ms:
            expires = f"expired {expires}"
        rows.append(
            (
                info.name,
                info.principal,
                info.kind,
                "yes" if info.admin else "no",
                ", ".join(f"{k}={v.name}" for k, v in info.grants.items()) or "-",
                _when(info.created_ms, "-"),
                _when(info.last_used_ms, "never"),
                expires,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    revoked = False
    if settings.auth_db.exists():
        db = AuthDB(settings.auth_db)
        try:
            revoked = TokenStore(db).revoke(args.name)
        finally:
            db.close()
    if not revoked:
        print(f"modelport: no token named {args.name!r} in {settings.auth_db}", file=sys.stderr)
        return 1
    print(f"modelport: revoked token {args.name!r}", file=sys.stderr)
    return 0


def _when(ms: int | None, absent: str) -> str:
    if ms is None:
        return absent
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
