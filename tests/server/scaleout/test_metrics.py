"""The driver's merged /metrics: every replica's samples labelled replica=..., one HELP/TYPE per family (no Ray)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families

from server.scaleout.metrics import CONTENT_TYPE, merge

Key = tuple[str, frozenset[tuple[str, str]]]


def _replica(model: str, requests: int, latencies: list[float], loaded: float) -> str:
    """What a replica's /metrics answers: prometheus_client's own text 0.0.4 (with _created series)."""
    registry = CollectorRegistry()
    counter = Counter("modelport_requests", "Requests served.", ["model"], registry=registry)
    histogram = Histogram("modelport_latency_seconds", "Latency.", ["model"], buckets=(0.1, 1.0), registry=registry)
    Gauge("modelport_loaded", "Loaded models.", registry=registry).set(loaded)
    Counter("modelport_errors", "Errors, none yet.", ["model"], registry=registry)  # a family with no samples
    counter.labels(model).inc(requests)
    for seconds in latencies:
        histogram.labels(model).observe(seconds)
    return generate_latest(registry).decode()


def _samples(text: str, replica: str | None = None) -> dict[Key, float]:
    extra = {"replica": replica} if replica else {}
    return {
        (s.name, frozenset({**s.labels, **extra}.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _families(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def test_two_replicas_merge_labelled_with_one_help_and_type_per_family() -> None:
    a, b = _replica("iris", 3, [0.05, 0.5], 1.0), _replica("wine", 2, [2.0], 2.0)
    merged = merge({"10.0.0.1:8000": a, "10.0.0.2:8000": b})
    assert _samples(merged) == _samples(a, "10.0.0.1:8000") | _samples(b, "10.0.0.2:8000")  # values, le, _created
    for name in ("modelport_requests_total", "modelport_latency_seconds", "modelport_loaded", "modelport_errors_total"):
        assert merged.count(f"# TYPE {name} ") == merged.count(f"# HELP {name} ") == 1
    assert "# TYPE modelport_requests_total counter\n" in merged
    assert 'modelport_requests_total{model="iris",replica="10.0.0.1:8000"} 3.0\n' in merged
    assert 'modelport_latency_seconds_bucket{le="+Inf",model="wine",replica="10.0.0.2:8000"} 1.0\n' in merged
    assert 'modelport_loaded{replica="10.0.0.2:8000"} 2.0\n' in merged
    assert _families(merged) == _families(a)  # counter still a counter, histogram a histogram, _created gauges
    assert merge({"r": merged}).count("# TYPE modelport_latency_seconds histogram\n") == 1
    assert CONTENT_TYPE == CONTENT_TYPE_PLAIN_0_0_4


def test_families_of_some_replicas_only_are_unioned() -> None:
    a = "# HELP up Up.\n# TYPE up gauge\nup 1\n# TYPE only_a summary\nonly_a_sum 2.5\nonly_a_count 2\n"
    b = "# TYPE up gauge\nup 0\n# HELP only_b Bee.\n# TYPE only_b untyped\nonly_b 7\n"
    merged = merge({"a:1": a, "b:1": b})
    assert merged.splitlines() == [
        "# HELP up Up.",
        "# TYPE up gauge",
        'up{replica="a:1"} 1.0',
        'up{replica="b:1"} 0.0',
        "# TYPE only_a summary",
        'only_a_sum{replica="a:1"} 2.5',
        'only_a_count{replica="a:1"} 2.0',
        "# HELP only_b Bee.",
        "# TYPE only_b untyped",
        'only_b{replica="b:1"} 7.0',
    ]
    assert _families(merged) == {"up": "gauge", "only_a": "summary", "only_b": "unknown"}


def test_a_type_conflict_keeps_the_first_type_and_every_sample() -> None:
    merged = merge({"a": "# TYPE jobs gauge\njobs 1\n", "b": "# TYPE jobs untyped\njobs 2\n", "c": "jobs 3\n"})
    assert merged.count("# TYPE jobs") == 1 and "# TYPE jobs gauge\n" in merged
    assert _samples(merged) == {("jobs", frozenset({("replica", r)})): v for r, v in (("a", 1), ("b", 2), ("c", 3))}
    summary = "# TYPE jobs summary\njobs_sum 4\njobs_count 2\n"
    assert merge({"a": "# TYPE jobs gauge\njobs 1\n", "b": summary}).splitlines()[1:] == [
        'jobs{replica="a"} 1.0',
        'jobs_sum{replica="b"} 4.0',
        'jobs_count{replica="b"} 2.0',
    ]


def test_label_values_and_help_are_escaped() -> None:
    value = 'say "hi"\nC:\\models\\'
    text = "# HELP m A \\\\ and\\nmore.\n# TYPE m gauge\n" + r'm{path="say \"hi\"\nC:\\models\\"} 1' + "\n"
    (family,) = text_string_to_metric_families(text)
    assert family.samples[0].labels["path"] == value  # the input is what a replica would send
    merged = merge({'odd "key"\n': text})
    assert 'm{path="say \\"hi\\"\\nC:\\\\models\\\\",replica="odd \\"key\\"\\n"} 1.0\n' in merged
    (family,) = text_string_to_metric_families(merged)
    assert family.documentation == "A \\ and\nmore."
    assert family.samples[0].labels == {"path": value, "replica": 'odd "key"\n'}


def test_a_replica_label_is_overwritten_with_the_key() -> None:
    merged = merge({"10.0.0.1:8000": '# TYPE x gauge\nx{replica="me",m="a"} 1\n'})
    assert merged.splitlines()[1] == 'x{replica="10.0.0.1:8000",m="a"} 1.0'


def test_special_values_timestamps_and_names_survive() -> None:
    text = '# TYPE g gauge\ng{v="nan"} NaN\ng{v="inf"} +Inf\ng{v="-inf"} -Inf 1700000000123\n'
    text += '# TYPE legacy counter\nlegacy 5\n# TYPE i info\n# TYPE i_info gauge\ni_info{v="1"} 1\nstray 1e+20\n'
    lines = merge({"r": text}).splitlines()
    assert lines == [
        "# TYPE g gauge",
        'g{v="nan",replica="r"} NaN',
        'g{v="inf",replica="r"} +Inf',
        'g{v="-inf",replica="r"} -Inf 1700000000123',
        "# TYPE legacy counter",  # a counter declared without _total keeps its name, samples too
        'legacy{replica="r"} 5.0',
        "# TYPE i gauge",  # not a 0.0.4 type: the gauge prometheus_client would write
        "# TYPE i_info gauge",
        'i_info{v="1",replica="r"} 1.0',
        "# TYPE stray untyped",
        'stray{replica="r"} 1e+20',
    ]
    values = {s.labels["v"]: s for f in text_string_to_metric_families("\n".join(lines[:4])) for s in f.samples}
    assert math.isnan(values["nan"].value) and values["inf"].value == math.inf and values["-inf"].value == -math.inf
    assert values["-inf"].timestamp == 1700000000.123


def test_no_replicas_is_an_empty_exposition() -> None:
    assert merge({}) == ""
    assert merge({"r": ""}) == ""


@pytest.mark.parametrize("text", ["up{model 1\n", "up one\n", "# TYPE up\n", 'up{m="a} 1\n'])
def test_malformed_text_names_the_replica(text: str) -> None:
    with pytest.raises(ValueError, match=r"replica 10\.0\.0\.2:8000: malformed"):
        merge({"10.0.0.1:8000": "up 1\n", "10.0.0.2:8000": text})
