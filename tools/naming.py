"""Tool names for served deployments: short, portable, deterministic.

Rules (docs/mcp.md): only ``[a-z0-9_-]`` (the Anthropic API and OpenAI reject dots), at most 40 characters so that
Claude Code's ``mcp__<server>__<tool>`` stays within 64, unique, and a function of the set of deployments only (never
of the order they were loaded in). The real model name, version and alias go in the tool's title, description and
``_meta``.

* One deployment of a model: the sanitized model name (``Sales Forecast`` → ``sales_forecast``).
* Several deployments of one model: the name plus the alias or ``v<version>`` (``fraud_detector_champion``,
  ``fraud_detector_v3``).
* Names that still collide (``a.b`` and ``a_b``) or are too long get a short hash of the deployment key.
* A name that would start with a digit gets ``model_`` in front (Gemini wants a letter or ``_`` first):
  ``2024 churn model`` → ``model_2024_churn_model``.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable

MAX_NAME_LENGTH = 40
"""Longest tool name we publish (``mcp__<server>__<tool>`` must fit in 64 characters)."""

_INVALID = re.compile(r"[^a-z0-9_-]+")
_HASH_LEN = 6


def sanitize(text: str) -> str:
    """Lower-case ``text`` and replace every run of other characters than ``[a-z0-9_-]`` with ``_``."""
    name = re.sub(r"_{2,}", "_", _INVALID.sub("_", text.strip().lower()).strip("_-")) or "model"
    return name if name[0].isalpha() else f"model_{name}"


def short_hash(key: str) -> str:
    """A short, stable hash of a deployment key."""
    return hashlib.sha256(key.encode()).hexdigest()[:_HASH_LEN]


def _fit(name: str, key: str, *, force_hash: bool = False) -> str:
    if not force_hash and len(name) <= MAX_NAME_LENGTH:
        return name
    suffix = "_" + short_hash(key)
    return name[: MAX_NAME_LENGTH - len(suffix)].rstrip("_-") + suffix


def assign_names(deployments: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """Give every deployment a unique tool name.

    Args:
        deployments: ``(key, model_name, selector)`` per deployment, where ``key`` is the deployment key
            (``name@alias`` or ``name/version``) and ``selector`` the alias or version it was deployed by.

    Returns:
        Deployment key → tool name.
    """
    items = sorted(set(deployments))
    by_model: defaultdict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for item in items:
        by_model[item[1]].append(item)
    wanted: dict[str, str] = {}
    for model, group in by_model.items():
        base = sanitize(model)
        for key, _name, selector in group:
            if len(group) == 1:
                wanted[key] = _fit(base, key)
            else:
                tag = sanitize(selector) if not selector.isdigit() else f"v{selector}"
                wanted[key] = _fit(f"{base}_{tag}", key)
    owners: dict[str, list[str]] = defaultdict(list)
    for key, name in wanted.items():
        owners[name].append(key)
    names: dict[str, str] = {}
    for name, keys in owners.items():
        for key in keys:
            names[key] = name if len(keys) == 1 else _fit(name, key, force_hash=True)
    return names
