"""The dashboard's feed for every replica at once (no Ray import): the driver merges each replica's
``/dashboard/feed.json`` (``server/rest/dashboard.py``) into one, in the same shape, so the page works unchanged.

Counts and rates add up across replicas (requests/s, queue depth, memory, CPU); error rates and costs are weighted
by each replica's requests/s; latency percentiles cannot be combined from percentiles, so p50/p99 are the slowest
replica's (an upper bound). Series are aligned on whole seconds. A deployment answered by replicas on different
versions (a rolling swap) shows the newest one with ``versions`` listing all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SUMMED = ("rps", "queue_depth", "cpu_percent", "rss_mb")
SLOWEST = ("p50_ms", "p99_ms", "gpu_percent")
WEIGHTED = ("error_rate", "cost_per_1k", "batch_rows")
MAX_EVENTS = 50


def merge_feeds(feeds: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """One feed from every replica's (keyed by its address), in the shape of one."""
    items = list(feeds.items())
    if not items:
        raise ValueError("no feed to merge")
    first = items[0][1]
    out = dict(first)
    out["now"] = max(f.get("now") or 0 for _, f in items)
    out["replicas"] = len(items)
    out["groups"] = list(dict.fromkeys(g for _, f in items for g in f.get("groups") or []))
    out["current"] = _combine([f.get("current") or {} for _, f in items])
    series = [f["series"] for _, f in items if f.get("series")]
    out["series"] = _series(series) if len(series) > 1 else (series[0] if series else first.get("series"))
    out["deployments"] = _by_key([f.get("deployments") or [] for _, f in items], "key")
    out["endpoints"] = _by_key([f.get("endpoints") or [] for _, f in items], "name")
    failures: dict[str, Any] = {}
    for _, f in items:
        for failure in f.get("failures") or []:
            failures.setdefault(failure["key"], failure)
    out["failures"] = list(failures.values())
    events = [{**e, "replica": address} for address, f in items for e in f.get("events") or []]
    out["events"] = sorted(events, key=lambda e: e.get("at") or 0, reverse=True)[:MAX_EVENTS]
    return out


def _combine(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of numbers from several replicas' (the first row's other fields kept)."""
    out = dict(rows[0]) if rows else {}
    weights = [float(r.get("rps") or 0.0) for r in rows]
    for key in (*SUMMED, *SLOWEST, *WEIGHTED):
        values = [(float(r[key]), w) for r, w in zip(rows, weights, strict=True) if r.get(key) is not None]
        if key not in out and not values:
            continue
        if not values:
            out[key] = None
        elif key in SUMMED:
            out[key] = round(sum(v for v, _ in values), 3)
        elif key in SLOWEST:
            out[key] = max(v for v, _ in values)
        else:
            out[key] = _weighted(values)
    return out


def _weighted(pairs: list[tuple[float, float]]) -> float | None:
    if not pairs:
        return None
    total = sum(w for _, w in pairs)
    if total <= 0:
        return round(sum(v for v, _ in pairs) / len(pairs), 6)
    return round(sum(v * w for v, w in pairs) / total, 6)


def _series(all_series: list[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """Per-second series aligned on whole seconds, combined second by second."""
    by_second: dict[int, list[dict[str, Any]]] = {}
    keys = [k for k in all_series[0] if k != "t"]
    for series in all_series:
        for i, t in enumerate(series.get("t") or []):
            point = {k: series[k][i] if i < len(series.get(k) or []) else None for k in keys}
            by_second.setdefault(round(t), []).append(point)
    seconds = sorted(by_second)
    out: dict[str, list[Any]] = {"t": [float(s) for s in seconds]}
    combined = [_combine(by_second[s]) for s in seconds]
    for key in keys:
        out[key] = [row.get(key) for row in combined]
    return out


def _by_key(lists: Iterable[list[dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """Rows of the same ``key`` from several replicas combined, in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rows in lists:
        for row in rows:
            groups.setdefault(row[key], []).append(row)
    out = []
    for rows in groups.values():
        newest = max(rows, key=lambda r: r.get("loaded_at") or 0)
        combined = _combine([newest] + [r for r in rows if r is not newest])
        versions = sorted({str(r["version"]) for r in rows if r.get("version") is not None})
        if versions:
            combined["versions"] = versions
        combined["replicas"] = len(rows)
        out.append(combined)
    return out
