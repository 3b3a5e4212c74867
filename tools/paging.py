"""Cursor pagination of ``tools/list`` and ``resources/list`` (both protocol eras).

A cursor is opaque to clients: URL-safe base64 of ``{"v": 1, "list": <what it pages>, "after": <key of the last item
sent>, "fp": <fingerprint of the list it was cut from>}``. A page is the items whose key sorts after ``after``, so

* pages stay consistent: with an unchanged list, the pages are exactly the slices of the full listing;
* after a change (a deploy between two pages), a cursor still continues after the last item seen, never repeating
  it and never starting over; the fingerprint only says that the list changed (logged at debug), since the
  client hears ``list_changed`` and lists again anyway;
* a cursor needs no server state: it works across requests, eras, sessions and replicas.

A cursor that does not decode, pages another list or has an unknown version is a JSON-RPC ``-32602``
(INVALID_PARAMS) error, never the first page again (a client would loop). The last page has no ``nextCursor``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import mcp.types as types
from mcp.shared.exceptions import MCPError

log = logging.getLogger(__name__)

T = TypeVar("T")

_VERSION = 1


def fingerprint(keys: Sequence[str]) -> str:
    """A short digest of the keys of a listing (changes when an item comes or goes)."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]


def encode_cursor(listing: str, after: str, fp: str) -> str:
    payload = json.dumps({"v": _VERSION, "list": listing, "after": after, "fp": fp}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(listing: str, cursor: str) -> tuple[str, str]:
    """``(after, fingerprint)`` of a cursor of ``listing``; raises ``MCPError(INVALID_PARAMS)`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        ok = (
            isinstance(payload, dict)
            and payload.get("v") == _VERSION
            and payload.get("list") == listing
            and isinstance(payload.get("after"), str)
            and isinstance(payload.get("fp"), str)
        )
    except (binascii.Error, ValueError):  # not base64, not UTF-8, not JSON
        ok = False
    if not ok:
        shown = cursor if len(cursor) <= 40 else cursor[:40] + "..."
        raise MCPError(
            code=types.INVALID_PARAMS,
            message=f"Invalid cursor for {listing}: {shown!r} is not a cursor this server gave out. Pass the "
            "nextCursor of the previous page unchanged, or leave the cursor out to list from the start.",
            data={"cursor": shown},
        )
    return payload["after"], payload["fp"]


def page(
    listing: str,
    items: Sequence[tuple[str, T]],
    cursor: str | None,
    size: int,
    *,
    max_bytes: int | None = None,
    size_of: Callable[[T], int] | None = None,
) -> tuple[list[T], str | None]:
    """One page of ``items`` (``(key, item)`` sorted by key, keys unique) and the cursor of the next one (or ``None``).

    A page holds at most ``size`` items and, with ``max_bytes`` and ``size_of``, items of at most ``max_bytes`` in all
    (at least one item, however big: a client must be able to get every item).

    Raises:
        MCPError: ``INVALID_PARAMS`` for a cursor that is not one of ours for ``listing``.
    """
    keys = [key for key, _ in items]
    fp = fingerprint(keys)
    start = 0
    if cursor is not None:
        after, seen = decode_cursor(listing, cursor)
        if seen != fp:
            log.debug("%s changed between pages; continuing after %r", listing, after)
        start = bisect.bisect_right(keys, after)
    chunk = items[start : start + size]
    if max_bytes is not None and size_of is not None:
        total = 0
        for n, (_, item) in enumerate(chunk):
            total += size_of(item)
            if total > max_bytes and n > 0:
                chunk = chunk[:n]
                break
    more = start + len(chunk) < len(items)
    return [item for _, item in chunk], encode_cursor(listing, chunk[-1][0], fp) if more and chunk else None
