"""Input series of the promtool tests, in promtool's expanding notation (``_promtool``).

Counters are written as syncperf exposes them: a series does not exist until its first event
and then appears at its count (there is no 0 sample before it, and no ``_created`` series),
so a rule that only sees a counter grow from 0 is tested against what it will really get.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

from syncperf._tools.monitoring._options import RuleOptions


class Timeline:
    """Builds promtool expanding-notation values on a fixed sample step."""

    def __init__(self, step: int, samples: int) -> None:
        self.step = step
        self.samples = samples

    def counter(self, segments: list[tuple[int, float]], bucket: bool = False) -> str:
        """A counter growing at ``rate`` per second for ``steps`` samples, per segment.

        The last segment is extended to the end of the timeline. The counter is 0 at the
        first sample, so its series is absent until the first sample after its first event;
        a histogram's ``bucket`` appears with its series' first observation (the histograms
        here are observed from the start), at 0 if no observation fell in it.
        """
        rates: list[float] = []
        for index, (steps, rate) in enumerate(segments):
            last = index == len(segments) - 1
            rates += [rate] * (self.samples - len(rates) if last else steps)
        values = accumulate((rate * self.step for rate in rates[1:]), initial=0.0)
        return notation(list(values), first=1 if bucket else None)

    def event(self, seconds: float, count: float) -> str:
        """A counter whose first ``count`` events come at once, ``seconds`` into the timeline,
        and no more after them: absent until then, ``count`` from then on."""
        at = self.steps(seconds)
        return notation([0.0] * at + [float(count)] * (self.samples - at))

    def restart(self, stopped: float, seconds: float, old: float, count: float) -> str | None:
        """A process that counted ``old`` from the start, stopped ``stopped`` seconds in (its
        series marked stale, as a target going down is), and a new one on the same target
        whose first ``count`` events come ``seconds`` in; None if they leave no gap."""
        end, at = int(stopped // self.step), self.steps(seconds)
        if end < 1 or at <= end + 1:
            return None
        return f"{_n(old)}x{end - 1} stale _x{at - end - 1} {_n(count)}x{self.samples - at - 1}"

    def gauge(self, value: float) -> str:
        """A constant gauge."""
        return f"{_n(value)}+0x{self.samples - 1}"

    def steps(self, seconds: float) -> int:
        """Whole steps covering ``seconds``."""
        return max(1, math.ceil(seconds / self.step))


def notation(values: list[float], first: int | None = None) -> str:
    """``values`` of a counter in promtool's notation: ``_`` (no sample) before ``first``
    (by default while it is 0), then runs of ``start+increment`` (``a+bxn`` is n + 1
    samples, ``_xn`` n missing ones)."""
    if first is None:
        first = next((i for i, v in enumerate(values) if v), len(values))
    parts = [f"_x{first}"] if first else []
    index = first
    while index < len(values):
        end = index + 1
        increment = values[end] - values[index] if end < len(values) else 0.0
        while end + 1 < len(values) and math.isclose(
            values[end + 1] - values[end], increment, rel_tol=1e-9, abs_tol=1e-9
        ):
            end += 1
        end = min(end, len(values) - 1)
        parts.append(f"{_n(values[index])}+{_n(increment)}x{end - index}")
        index = end + 1
    return " ".join(parts)


def _n(value: float) -> str:
    rounded = round(value, 9)
    return str(int(rounded)) if float(rounded).is_integer() else repr(rounded)


def series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    """One ``input_series`` entry."""
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


@dataclass
class Fixture:
    """Input series of one alert test and the label sets that must fire."""

    series: list[dict[str, str]] = field(default_factory=list)
    firing: list[dict[str, str]] = field(default_factory=list)
    eval_seconds: float = 0.0


Builder = Callable[[RuleOptions, Timeline, float, float], Fixture]
"""``build(options, timeline, rate, for_seconds)``: the fixture of one alert."""


def steady(o: RuleOptions, for_s: float, t: Timeline) -> float:
    """When a fixture at steady rates is evaluated: a window and the alert's ``for`` in."""
    return o.seconds("window") + for_s + 2 * t.step
