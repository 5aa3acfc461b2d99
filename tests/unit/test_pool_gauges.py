"""``syncperf.sqlalchemy._pool_gauges``: the pools of one name, summed, as pools come and go."""

from __future__ import annotations

from collections.abc import Callable

from syncperf.sqlalchemy._pool_gauges import COUNT, IDLE_MAX, MAX, PENDING, Values, attach
from syncperf.testing import Capture, capture


class Pool:
    """One engine's pool metrics as the gauges read them (a closed pool reports nothing);
    ``during`` runs once, as ``observe`` returns: what the application's thread does while a
    collection is under way."""

    def __init__(self, used: int, during: Callable[[], None] | None = None) -> None:
        self.name = "orders"
        self.closed = False
        self.used = used
        self.during = during

    def observe(self) -> Values:
        count = {} if self.closed else {(("db.client.connection.state", "used"),): 1.0 * self.used}
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return {COUNT: count, MAX: {}, IDLE_MAX: {}, PENDING: {}}


def _used(cap: Capture) -> list[float]:
    return [point.value for point in cap.points(COUNT)]


def test_a_pool_attached_while_a_collection_drops_a_closed_one_is_reported() -> None:
    with capture() as cap:
        later = Pool(used=4)

        def close_and_attach() -> None:
            first.closed = True  # engine disposed...
            attach(later, cap.runtime)  # ...and another instrumented under the same pool name

        first = Pool(used=1, during=close_and_attach)
        attach(first, cap.runtime)
        assert _used(cap) == [1.0]  # the collection that drops the closed pool
        assert _used(cap) == [4.0]
        assert _used(cap) == [4.0]  # for good


def test_a_pool_attached_while_the_last_closed_one_is_dropped_is_reported() -> None:
    with capture() as cap:
        later = Pool(used=4)
        closed = Pool(used=0, during=lambda: attach(later, cap.runtime))
        closed.closed = True  # nothing left to report: the gauges of its name would stop
        attach(closed, cap.runtime)
        assert _used(cap) == []
        assert _used(cap) == [4.0]
