"""One Prometheus exposition for every replica: under ``modelport serve --ray`` each replica answers GET /metrics for
itself only, so the front routes GET /metrics to the Ray-mode driver, which fetches every replica's text and answers
``merge`` of them (as ``CONTENT_TYPE``). Every sample gets the label ``replica="<key>"`` (a ``replica`` label the
replica set itself is overwritten), families seen on only some replicas are unioned, and each family gets one TYPE
line, the first replica's (a family whose type differs across replicas keeps the first type and all the samples), and
one HELP line, the first non-empty one (none if no replica documents it). Sample names come out as they went in
(``_total``, ``_bucket``, ``_created`` ...); nothing is summed across replicas: Prometheus users ``sum by``
themselves. No Ray, no HTTP here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# text 0.0.4 knows these types; the rest map as prometheus_client's own generate_latest maps them
_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "summary": "summary"}
_TYPES |= {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}
_COUNTER_LINE = re.compile(r"^[ \t]*#[ \t]+TYPE[ \t]+(\S+)[ \t]+counter[ \t]*$", re.MULTILINE)


@dataclass
class _Family:
    type: str
    help: str
    lines: list[str] = field(default_factory=list)


def merge(expositions: Mapping[str, str]) -> str:
    """Prometheus text 0.0.4 of every replica's exposition, each sample labelled replica="<key>".

    Families appear in the order first seen, samples in replica order. An empty mapping gives "".
    Raises ValueError naming the replica whose text does not parse.
    """
    families: dict[str, _Family] = {}
    for replica, text in expositions.items():
        for name, type_, help_, samples in _families(replica, text):
            family = families.setdefault(name, _Family(type_, help_))
            family.help = family.help or help_
            family.lines.extend(_sample_line(sample, replica) for sample in samples)
    out: list[str] = []
    for name, family in families.items():
        if family.help:
            out.append(f"# HELP {name} {_escape(family.help, quote=False)}\n")
        out.append(f"# TYPE {name} {family.type}\n")
        out.extend(family.lines)
    return "".join(out)


def _families(replica: str, text: str) -> list[tuple[str, str, str, list[Sample]]]:
    """(name as exposed, 0.0.4 type, help, samples) of one replica's text."""
    try:
        metrics = list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser is lax and raises more than ValueError on garbage
        raise ValueError(f"replica {replica}: malformed Prometheus text: {exc!r}") from exc
    counters = set(_COUNTER_LINE.findall(text))
    result: list[tuple[str, str, str, list[Sample]]] = []
    for metric in metrics:
        name, samples = metric.name, list(metric.samples)
        if metric.type == "counter":
            # the parser drops "_total" from a counter's name, and appends it to the samples of one declared without
            if metric.name in counters and metric.name + "_total" not in counters:
                samples = [s._replace(name=s.name.removesuffix("_total")) for s in samples]
            else:
                name = metric.name + "_total"
        result.append((name, _TYPES.get(metric.type, "untyped"), metric.documentation, samples))
    return result


def _sample_line(sample: Sample, replica: str) -> str:
    labels = {**sample.labels, "replica": replica}
    body = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    stamp = "" if sample.timestamp is None else f" {round(float(sample.timestamp) * 1000)}"
    return f"{sample.name}{{{body}}} {_value(sample.value)}{stamp}\n"


def _escape(value: str, quote: bool = True) -> str:
    """Backslash, newline and (in label values, not in HELP) double quote, as text 0.0.4 escapes them."""
    value = value.replace("\\", r"\\").replace("\n", r"\n")
    return value.replace('"', r"\"") if quote else value


def _value(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
