"""The direct Prometheus exposition equals what prometheus_client encodes from the collector."""

from __future__ import annotations

import contextlib
import gzip
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from syncperf._metrics.aggregates import Registry, freeze
from syncperf._metrics.prometheus import SyncPerfCollector, scrape
from syncperf._metrics.reader import Reader

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
_text = st.text(st.characters(codec="utf-8", exclude_categories=("C",)), max_size=8)
_attributes = st.dictionaries(
    st.sampled_from(["entity", "status", "sync.mode", "sync_mode", "le", "zeta"]),
    st.one_of(_text, st.booleans()),
    max_size=3,
)
_kinds = st.sampled_from(["histogram", "counter", "updowncounter"])
_values = st.one_of(st.integers(-(10**7), 10**7), st.floats(-1e9, 1e9, allow_nan=False))


def _build(ops: list[tuple[int, str, dict[str, Any], float]]) -> CollectorRegistry:
    registry = Registry()
    reader = Reader(registry, Resource({}), InstrumentationScope("t"))
    served = CollectorRegistry()
    SyncPerfCollector(reader).register(served)
    for number, kind, attributes, value in ops:
        name = f"sync.m{number}.{kind}"
        instrument = registry.instrument(
            name,
            kind,
            "s",
            'doc "\\ x\n',
            bounds=(0, 0.5, 1, 1e7),  # type: ignore[arg-type]
        )
        if kind == "histogram":
            instrument.histogram(freeze(attributes)).record(value)
        else:
            instrument.sum(freeze(attributes)).add(abs(value) if kind == "counter" else value)
    return served


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), _kinds, _attributes, _values), max_size=25))
def test_direct_exposition_is_byte_identical(ops: list[tuple[int, str, dict[str, Any], float]]):
    served = _build(ops)
    for accept, encode in ((None, generate_latest), (OPENMETRICS, openmetrics_latest)):
        expected = encode(served)
        body = scrape(served, accept, None, {})[2]
        assert body == expected
        again = scrape(served, accept, None, {})[2]  # cached label text, same bytes
        assert again == expected
    parsed = list(text_string_to_metric_families(scrape(served, None, None, {})[2].decode()))
    assert parsed == list(text_string_to_metric_families(generate_latest(served).decode()))


def test_scrape_keeps_other_collectors_and_negotiates() -> None:
    served = _build([(0, "counter", {"entity": "a"}, 2)])
    Counter("app_requests", "requests", registry=served).inc()
    status, headers, body = scrape(served, OPENMETRICS, "gzip", {})
    text = gzip.decompress(body).decode()
    assert status == "200 OK"
    assert ("Content-Encoding", "gzip") in headers
    assert headers[0][1].startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    assert "app_requests_total 1.0" in text
    assert 'sync_m0_counter_seconds_total{entity="a"} 2.0' in text
    plain = scrape(served, "text/plain", None, {})
    assert plain[1] == [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")]
    only = scrape(served, None, None, {"name[]": ["app_requests_total"]})[2].decode()
    assert "app_requests_total" in only and "sync_m0" not in only


def test_counts_of_a_million_and_more_are_written_as_prometheus_client_writes_them() -> None:
    served = _build([(0, "histogram", {"entity": "a"}, 0.2)])
    (collector,) = [c for c in list(served._collector_to_names) if isinstance(c, SyncPerfCollector)]
    registry = collector.reader._registry
    (instrument,) = registry.instruments.values()
    (series,) = instrument.series.values()
    series.counts[1] += 1_234_567  # as if recorded that often
    for accept, encode in ((None, generate_latest), (OPENMETRICS, openmetrics_latest)):
        assert scrape(served, accept, None, {})[2] == encode(served)
    assert "1.234568e+06" in generate_latest(served).decode()


def test_label_values_are_escaped_and_kept_as_prometheus_client_writes_them() -> None:
    # "new\nline" is not exportable: it is counted under syncperf.invalid_attributes
    values = ['say "hi"', "back\\slash", "new\nline", "ünïcødé ✓", "", "le"]
    ops = [
        (n, kind, {"entity": v, "zeta": v[::-1]}, 0.7)
        for n, v in enumerate(values)
        for kind in ("histogram", "counter")
    ]
    ops += [(0, "histogram", {"le": "x", "status": "ok"}, 2e7), (1, "updowncounter", {}, -3)]
    served = _build(ops)
    for accept, encode in ((None, generate_latest), (OPENMETRICS, openmetrics_latest)):
        expected = encode(served)
        assert scrape(served, accept, None, {})[2] == expected
        assert scrape(served, accept, None, {})[2] == expected
    text = scrape(served, None, None, {})[2].decode()
    assert 'entity="say \\"hi\\""' in text and 'syncperf_invalid_attributes="true"' in text
    assert 'entity="back\\\\slash"' in text and "ünïcødé ✓" in text
    assert 'le="+Inf"' in text and text.count("# TYPE") == 13
    families = {f.name: f for f in text_string_to_metric_families(text)}
    bucket = families["sync_m0_histogram_seconds"].samples[0]
    assert bucket.labels["entity"] == 'say "hi"' and bucket.labels["zeta"] == '"ih" yas'
    assert bucket.labels["le"] == "0.0" and bucket.value == 0.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads (3.12+)
def test_a_forked_childs_first_scrape_has_its_own_label_layout() -> None:
    # The parent served a scrape of two series; the child's first two series carry another
    # label (error.type): a layout cached by series count alone dropped it, duplicating lines.
    import syncperf
    from syncperf._metrics.prometheus import scrape
    from syncperf.testing import capture

    registry = CollectorRegistry()
    with capture(strict=False, prometheus=registry):

        @syncperf.instrument_sync("push", entity="todo")
        def push(error: Exception | None = None) -> None:
            if error is not None:
                raise error

        push()
        with syncperf.sync_operation("pull", entity="todo"):
            pass
        scrape(registry, "", "", {})
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                for error in (TimeoutError(), ValueError()):
                    with contextlib.suppress(Exception):
                        push(error)
                os.write(write, scrape(registry, "", "", {})[2])
            finally:
                os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read, "rb") as pipe:
            body = pipe.read().decode()
    assert os.waitstatus_to_exitcode(status) == 0
    samples = [line.rsplit(" ", 1)[0] for line in body.splitlines() if line[:1] != "#"]
    assert len(samples) == len(set(samples))  # no series twice
    counts = [s for s in samples if s.startswith("sync_operation_duration_seconds_count")]
    assert len(counts) == 2
    assert all('error_type="' in line for line in counts)


def test_name_filters_select_syncperfs_samples_as_prometheus_client_selects_its_own() -> None:
    served = _build([(0, "histogram", {"entity": "a"}, 0.2), (1, "counter", {"entity": "b"}, 3)])
    Counter("app_requests", "requests", registry=served).inc()
    names = ["sync_m0_histogram_seconds_count", "sync_m1_counter_seconds_total"]
    names.append("app_requests_total")
    for accept in (None, OPENMETRICS):
        body = scrape(served, accept, None, {"name[]": names})[2].decode()
        lines = [line for line in body.splitlines() if line[:1] != "#"]
        samples = [line.split("{")[0].split(" ")[0] for line in lines]
        assert sorted(set(samples)) == sorted(names)
        assert 'sync_m0_histogram_seconds_count{entity="a"} 1.0' in body
        assert 'sync_m1_counter_seconds_total{entity="b"} 3.0' in body


@pytest.mark.parametrize(
    "accept",
    [
        "text/plain;version=1.0.0;escaping=dots",
        "application/openmetrics-text;version=1.0.0;escaping=dots",
        "text/plain;version=1.0.0;escaping=values",
    ],
)
def test_a_negotiated_name_escaping_applies_to_syncperfs_names_too(accept: str) -> None:
    # Prometheus 3's metric_name_escaping_scheme: the Content-Type said escaping=dots and
    # syncperf's names were written unescaped
    from prometheus_client.exposition import choose_encoder

    served = _build([(0, "counter", {"entity": "a"}, 2), (1, "histogram", {"sync.mode": "x"}, 1)])
    Counter("app_requests", "requests", registry=served).inc()
    encoder, content_type = choose_encoder(accept)
    _, headers, body = scrape(served, accept, None, {})
    assert headers == [("Content-Type", content_type)]
    assert body == encoder(served)
    if "dots" in accept:
        assert b"sync__m0__counter" in body and b"sync_m0_counter" not in body


@pytest.mark.parametrize("escaping", ["underscores", "dots"])
def test_name_filters_find_instruments_created_after_registration_whatever_the_escaping(
    escaping: str,
) -> None:
    # with escaping=dots, syncperf's samples came only through the names its collector
    # described at registration: an instrument created later (http.server.*, the outbox's,
    # the pool's) was never returned
    registry = Registry()
    reader = Reader(registry, Resource({}), InstrumentationScope("t"))
    served = CollectorRegistry()
    SyncPerfCollector(reader).register(served)
    late = registry.instrument("sync.late", "histogram", "s", "Late.", bounds=(0, 0.5, 1))
    late.histogram(freeze({"entity": "a"})).record(0.2)  # type: ignore[union-attr]
    accept = f"text/plain;version=1.0.0;escaping={escaping}"
    full = scrape(served, accept, None, {})[2].decode()
    wanted = [line for line in full.splitlines() if "late" in line and "_count" in line]
    assert len(wanted) == 1  # the series, named as this escaping names it
    body = scrape(served, accept, None, {"name[]": ["sync_late_seconds_count"]})[2].decode()
    assert wanted[0] in body.splitlines()
