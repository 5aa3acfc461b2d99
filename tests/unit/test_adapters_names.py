"""Mutator names to entities (Replicache's and Zero's push adapters): memoised, but never at
the cost of keeping what a client sent."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncperf._gate import MAX_NAME
from syncperf.adapters import replicache, zero
from syncperf.adapters._names import NameCache
from syncperf.testing import capture
from tests._adapters import run


def replicache_push(name: str) -> dict[str, Any]:
    mutation = {"id": 1, "clientID": "c", "name": name, "args": {}, "timestamp": 1}
    return {"pushVersion": 1, "clientGroupID": "g", "mutations": [mutation]}


def zero_push(name: str) -> dict[str, Any]:
    mutation = {"type": "custom", "id": 1, "clientID": "c", "name": name, "args": []}
    return {"clientGroupID": "g", "pushVersion": 1, "requestID": "r", "mutations": [mutation]}


PUSHES: dict[str, tuple[Callable[[], Any], Callable[[str], dict[str, Any]], str]] = {
    "replicache, entity mapping": (
        lambda: replicache.Push(entity={"createTodo": "todo"}),
        replicache_push,
        "",
    ),
    "zero, entity mapping": (lambda: zero.Push(entity={"issue.create": "issue"}), zero_push, ""),
    "zero, namespace": (zero.Push, zero_push, "issue."),
}


@pytest.mark.parametrize("case", list(PUSHES))
def test_long_mutator_names_clients_send_are_not_kept_after_their_push(case: str) -> None:
    make, body, prefix = PUSHES[case]
    adapter = make()
    with capture():
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(10):  # ten distinct 100 KB names: 1 MB if any were kept
                run(adapter, body(f"{prefix}{i:03d}" + "x" * 100_000), {"mutations": []})
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert retained < 200_000


@settings(max_examples=60, deadline=None)
@given(
    key=st.text(st.sampled_from("ab."), min_size=1, max_size=3 * MAX_NAME),
    mapped=st.booleans(),
)
def test_a_name_resolves_the_same_whether_or_not_it_is_memoised(key: str, mapped: bool) -> None:
    entity: dict[str, str] | None = {key: "mapped"} if mapped else None
    names = NameCache(entity, {key: "created"}, zero.mutator_namespace)
    first = names(key)
    assert names(key) == first
    assert first == ("mapped" if mapped else zero.mutator_namespace(key), "created")


def test_a_callback_still_runs_for_a_name_too_long_to_be_memoised() -> None:
    calls: list[str] = []

    def entity(mutator: str) -> str:
        calls.append(mutator)
        return "todo"

    names = NameCache(entity, None, zero.mutator_namespace)
    long_name = "n" * (MAX_NAME + 1)
    assert [names(long_name), names(long_name), names("short"), names("short")] == [
        ("todo", None)
    ] * 4
    assert calls == [long_name, long_name, "short"]
