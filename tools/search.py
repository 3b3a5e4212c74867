"""``search_models``'s ranking: a small deterministic scorer over each served model's searchable words.

Every query word scores the best field it matches, weighted by field (name 6, aliases 4, tags and column names 3,
descriptions and units 2, column descriptions 1; a word that is a prefix of a field word, or the other way round,
scores half), plus 10 when the query is the model's name. Ties go by name. Stop words are ignored unless the query
has nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from server.deployments import DeploymentInfo
from tools.catalog import ToolSpec

_STOP = frozenset(
    ["a", "an", "and", "by", "for", "from", "in", "is", "it", "of", "on", "or", "per", "the", "to", "what", "which",
     "with", "model", "models"]
)  # fmt: skip
_WEIGHTS = {"name": 6.0, "alias": 4.0, "tag": 3.0, "column": 3.0, "text": 2.0, "unit": 2.0, "column_text": 1.0}
_EXACT_NAME_BONUS = 10.0
_SUMMARY_CHARS = 240


def tokens(text: str | None) -> list[str]:
    """Lower-case words of ``text``; ``snake_case``, ``kebab-case`` and ``camelCase`` split into their parts."""
    if not text:
        return []
    return re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text).lower())


@dataclass(frozen=True, slots=True)
class Entry:
    """One deployment as ``search_models`` sees it."""

    spec: ToolSpec
    fields: tuple[tuple[float, frozenset[str]], ...]
    """(weight, words) per searchable field."""
    names: frozenset[str]
    """The model name, deployment key and tool name, lower-case (an exact query match gets a bonus)."""
    tags: Mapping[str, str]
    hit: Mapping[str, Any]
    """The result entry, less ``tool`` and ``score``."""


def entry(spec: ToolSpec, info: DeploymentInfo) -> Entry:
    model, sig = info.model, info.signature
    columns = list(sig.inputs)
    words: dict[str, set[str]] = {kind: set() for kind in _WEIGHTS}
    words["name"].update(tokens(info.name))
    for alias in info.aliases:
        words["alias"].update(tokens(alias))
    for key, value in (model.tags or {}).items():
        words["tag"].update(tokens(f"{key} {value}"))
    for col in columns:
        words["column"].update(tokens(col.name))
        words["unit"].update(tokens(col.unit))
        words["column_text"].update(tokens(col.description))
    words["unit"].update(tokens(sig.output_unit))
    for text in (model.model_description, model.version_description, sig.output_description):
        words["text"].update(tokens(text))
    summary = (model.model_description or model.version_description or "").strip()
    if len(summary) > _SUMMARY_CHARS:
        summary = summary[: _SUMMARY_CHARS - 1].rstrip() + "…"
    hit = {
        "model": spec.key,
        "name": info.name,
        "version": info.version,
        "aliases": list(info.aliases),
        "description": summary,
        "output": _output(info),
        "columns": [
            {"name": c.name, "type": c.type, "unit": c.unit or None, "description": c.description or None}
            for c in columns
        ],
    }
    return Entry(
        spec,
        tuple((_WEIGHTS[kind], frozenset(w)) for kind, w in words.items() if w),
        frozenset({info.name.lower(), spec.key.lower(), spec.name}),
        {str(k).lower(): str(v).lower() for k, v in (model.tags or {}).items()},
        hit,
    )


def _output(info: DeploymentInfo) -> str:
    kind, sig = info.output_kind, info.signature
    if kind.kind == "classification":
        classes = [c.item() if hasattr(c, "item") else c for c in (kind.classes or ())]
        return "the class label" + (f", one of {json.dumps(classes)}," if classes else "") + " with class probabilities"
    words = "a number" if kind.kind == "regression" else "an array of numbers"
    if sig.output_unit:
        words += f" in {sig.output_unit}"
    return words + (f": {sig.output_description.strip().rstrip('.')}" if sig.output_description else "")


def _word_score(word: str, fields: Iterable[tuple[float, frozenset[str]]]) -> float:
    best = 0.0
    for weight, words in fields:
        if weight <= best:
            continue
        if word in words:
            best = weight
        elif weight / 2 > best and any(_near(word, w) for w in words):
            best = weight / 2
    return best


def _near(query: str, word: str) -> bool:
    """``visit`` ~ ``visits``, ``forecasting`` ~ ``forecast``: one is a prefix of the other (3+ letters)."""
    return (len(query) >= 3 and word.startswith(query)) or (len(word) >= 4 and query.startswith(word))


def rank(entries: Iterable[Entry], query: str, tags: Iterable[str] = ()) -> list[tuple[float, Entry]]:
    """Entries matching every tag and (for a non-empty query) at least one query word, best first."""
    wanted = [tag.partition("=") for tag in tags]
    words = [w for w in dict.fromkeys(tokens(query)) if w not in _STOP] or list(dict.fromkeys(tokens(query)))
    whole = query.strip().lower()
    ranked: list[tuple[float, Entry]] = []
    for item in entries:
        if any(
            k.strip().lower() not in item.tags or (sep and item.tags[k.strip().lower()] != v.strip().lower())
            for k, sep, v in wanted
        ):
            continue
        score = sum(_word_score(w, item.fields) for w in words)
        if whole and whole in item.names:
            score += _EXACT_NAME_BONUS
        if words and score == 0:
            continue
        ranked.append((score, item))
    ranked.sort(key=lambda pair: (-pair[0], pair[1].spec.model_name, pair[1].spec.key))
    return ranked
