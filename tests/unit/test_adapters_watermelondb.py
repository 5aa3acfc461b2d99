"""WatermelonDB pull and push, from the sync protocol's documented shapes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncperf.adapters import watermelondb
from syncperf.testing import Capture, capture
from tests._adapters import CHANGES, recorded, run, span_attributes

EXPECTED = {
    ("projects", "created"): 2,
    ("projects", "updated"): 1,
    ("projects", "deleted"): 1,
    ("tasks", "updated"): 1,
}


def test_pull_counts_changes_per_table_and_kind(syncperf_capture: Capture) -> None:
    run(watermelondb.Pull(), None, {"changes": CHANGES, "timestamp": 1700}, operation="pull")
    got = recorded(syncperf_capture)
    assert got.items == EXPECTED
    assert got.batches == [(1, 5)]


def test_turbo_pull_counts_nothing_and_marks_the_span(syncperf_capture: Capture) -> None:
    run(watermelondb.Pull(), None, {"syncJson": '{"changes": {}}'}, operation="pull")
    run(watermelondb.Pull(), None, '{"changes": {}, "timestamp": 1}', operation="pull")
    got = recorded(syncperf_capture)
    assert got.items == {}
    assert got.batch_count == 0
    assert got.dropped == {}
    assert all(
        dict(s.attributes or {})["sync.watermelondb.turbo"] for s in syncperf_capture.spans()
    )


def test_push_reads_a_bare_changes_body(syncperf_capture: Capture) -> None:
    run(watermelondb.Push(), CHANGES)
    got = recorded(syncperf_capture)
    assert got.items == EXPECTED
    assert got.batches == [(1, 5)]
    assert got.outcomes == {"success": 1}


def test_push_reads_a_changes_wrapper_body(syncperf_capture: Capture) -> None:
    run(watermelondb.Push(), {"changes": CHANGES, "lastPulledAt": 1600})
    assert recorded(syncperf_capture).items == EXPECTED


def test_a_table_named_changes_is_not_mistaken_for_a_wrapper(syncperf_capture: Capture) -> None:
    run(watermelondb.Push(), {"changes": {"created": [{"id": "x"}], "updated": [], "deleted": []}})
    assert recorded(syncperf_capture).items == {("changes", "created"): 1}


def test_rejected_ids_are_conflicts_per_table(syncperf_capture: Capture) -> None:
    response = {"experimentalRejectedIds": {"projects": ["ccc"], "tasks": ["tttt"], "tags": []}}
    run(watermelondb.Push(), CHANGES, response)
    got = recorded(syncperf_capture)
    assert got.conflicts == {("projects", "rejected"): 1, ("tasks", "rejected"): 1}
    assert got.outcomes == {"conflict": 1}
    assert span_attributes(syncperf_capture)["sync.watermelondb.rejected"] == 2


def test_an_empty_or_absent_push_response_is_fine(syncperf_capture: Capture) -> None:
    run(watermelondb.Push(), CHANGES, None)
    run(watermelondb.Push(), CHANGES, {})
    run(watermelondb.Push(), CHANGES, {"experimentalRejectedIds": None})
    got = recorded(syncperf_capture)
    assert got.conflicts == {}
    assert got.dropped == {}


def test_created_records_that_already_exist_are_duplicates(syncperf_capture: Capture) -> None:
    asked: list[tuple[str, list[str]]] = []

    def count_existing(table: str, records: Any) -> int:
        asked.append((table, [r["id"] for r in records]))
        return 1

    run(watermelondb.Push(count_existing=count_existing), CHANGES)
    got = recorded(syncperf_capture)
    assert asked == [("projects", ["aaaa", "bbbb"])]  # only tables with created records
    assert got.items[("projects", "created")] == 1
    assert got.idempotency == 1
    assert got.batches == [(1, 5)]


def test_count_existing_out_of_range_is_a_callback_failure() -> None:
    with capture(strict=False) as cap:
        run(watermelondb.Push(count_existing=lambda table, records: 3), CHANGES)
        got = recorded(cap)
    assert got.dropped == {"adapter_callback_failed": 1}
    assert got.items == {}


records = st.lists(st.fixed_dictionaries({"id": st.text(min_size=1, max_size=4)}), max_size=6)
changes = st.dictionaries(
    st.sampled_from(["projects", "tasks", "comments", "tags"]),
    st.fixed_dictionaries(
        {
            "created": records,
            "updated": records,
            "deleted": st.lists(st.text(max_size=3), max_size=6),
        }
    ),
    max_size=4,
)


@settings(max_examples=80, deadline=None)
@given(
    pushed=changes,
    rejected=st.dictionaries(
        st.sampled_from(["projects", "tasks"]), st.lists(st.text(), max_size=3)
    ),
    existing=st.integers(0, 6),
)
def test_push_counts_match_a_direct_computation(
    pushed: dict[str, Any], rejected: dict[str, list[str]], existing: int
) -> None:
    adapter = watermelondb.Push(count_existing=lambda table, recs: min(existing, len(recs)))
    with capture() as cap:
        run(adapter, pushed, {"experimentalRejectedIds": rejected})
        got = recorded(cap)
    expected: Counter[tuple[str | None, str | None]] = Counter()
    duplicates = 0
    for table, kinds in pushed.items():
        created = len(kinds["created"])
        dup = min(existing, created)
        duplicates += dup
        expected[(table, "created")] += created - dup
        expected[(table, "updated")] += len(kinds["updated"])
        expected[(table, "deleted")] += len(kinds["deleted"])
    assert got.items == {k: v for k, v in expected.items() if v}
    total = sum(len(k["created"]) + len(k["updated"]) + len(k["deleted"]) for k in pushed.values())
    assert got.batches == [(1, total)]
    assert got.conflicts == {(t, "rejected"): len(ids) for t, ids in rejected.items() if ids}
    assert got.idempotency == (1 if duplicates else 0)


@settings(max_examples=60, deadline=None)
@given(pulled=changes)
def test_pull_counts_match_a_direct_computation(pulled: dict[str, Any]) -> None:
    with capture() as cap:
        run(watermelondb.Pull(), None, {"changes": pulled, "timestamp": 1}, operation="pull")
        got = recorded(cap)
    expected = {
        (table, kind): len(values)
        for table, kinds in pulled.items()
        for kind, values in kinds.items()
        if values
    }
    assert got.items == expected
