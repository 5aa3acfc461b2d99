"""What a rejected value costs against an accepted one, at any payload size.

A value syncperf rejects (a list where a batch size belongs, a huge int, a lone surrogate)
is dropped, counted and logged once; it must cost about what an accepted value costs, never
something proportional to the payload (no ``repr()`` of it). Variants are interleaved in one
process; the ratio of each rejected case to the accepted case is reported and loosely gated.
"""

from __future__ import annotations

import logging
from typing import Any

import syncperf
from syncperf import _runtime
from syncperf._config import Config

from ._compare import interleaved, table

BODY_SIZES = (10, 10_000, 1_000_000)
CEILING = 3.0
"""Loose CI gate on rejected / accepted (reported near 1)."""


def _push(batch_size: Any) -> Any:
    @syncperf.instrument_sync("push", entity="todo", batch_size=lambda body: batch_size(body))
    def push(body: dict[str, Any]) -> None:
        pass

    return push


def test_a_rejected_value_costs_what_an_accepted_one_costs(benchmark: Any) -> None:
    runtime = _runtime.Runtime(Config(strict=False, tracer_provider=None))
    previous = _runtime.replace(runtime)
    logging.getLogger("syncperf").disabled = True  # the one warning is not what is measured
    try:
        accepted = _push(lambda body: len(body["changes"]))
        rejected = _push(lambda body: body["changes"])  # the list itself: rejected
        variants: dict[str, Any] = {}
        for size in BODY_SIZES:
            body = {"changes": list(range(size))}
            variants[f"accepted, {size:,} items"] = lambda a=accepted, b=body: a(b)
            variants[f"rejected, {size:,} items"] = lambda r=rejected, b=body: r(b)
        variants["rejected, 2**63"] = lambda: _huge({"changes": []})
        results = interleaved(variants, loops=300, rounds=9)
    finally:
        logging.getLogger("syncperf").disabled = False
        _runtime.replace(previous)
        runtime.shutdown()
    base = results[f"accepted, {BODY_SIZES[0]:,} items"]
    rows = [(name, us, base, us / base) for name, us in results.items()]
    print("\n" + table(rows, "Rejected against accepted values (µs per decorated call)"))
    benchmark.extra_info.update({name: round(ratio, 3) for name, _, _, ratio in rows})
    for name, us, _, ratio in rows:
        assert ratio <= CEILING, (name, us, ratio)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


_huge = _push(lambda body: 2**63)
