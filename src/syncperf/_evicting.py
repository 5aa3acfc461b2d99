"""A bounded cache that keeps what is in use, with hits one ``dict.get``: ``Evicting``.

Clearing a full cache makes every entry pay its computation again at once: a service with a
few more distinct statements than the capacity classified all of them anew each time the cache
filled. ``Evicting`` instead sets the oldest-inserted half of ``hot`` aside when it is full (and
drops what was set aside before); a key found aside comes back into ``hot`` (``recall``) without
being computed again. A key used at least once while half the capacity of new keys comes in
stays cached however many other keys pass through; hits never touch anything but ``hot``.

No lock: writers are off the hot path and each step is one atomic ``dict`` operation (the copy
of the oldest half is one C call; should another thread change ``hot`` during it, as a
free-threaded build allows, nothing is set aside this time). Racing writers may each add one
entry past the capacity: still bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class Evicting(Generic[K, V]):
    """``hot`` (at most ``most`` entries) and the entries last set aside (half as many)."""

    __slots__ = ("_aside", "hot", "most")

    def __init__(self, most: int) -> None:
        self.hot: dict[K, V] = {}
        """Look keys up here (``hot.get(key)``); on a miss, ``recall`` before computing."""
        self.most = most
        self._aside: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self.hot) + len(self._aside)

    def __iter__(self) -> Iterator[K]:
        """Every key held, hot or set aside."""
        return iter([*self.hot, *self._aside])

    def recall(self, key: K, default: D) -> V | D:
        """The value set aside for ``key``, back in ``hot``; ``default`` when there is none."""
        try:
            value = self._aside.pop(key)
        except KeyError:
            return default
        self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key`` in ``hot``, setting the oldest half aside when full."""
        hot = self.hot
        if len(hot) >= self.most:
            try:
                aside = dict(islice(hot.items(), len(hot) // 2 or 1))
            except RuntimeError:  # changed by another thread meanwhile
                aside = {}
            self._aside = aside
            for old in aside:
                hot.pop(old, None)
            if len(hot) >= self.most:  # nothing set aside: bounded all the same
                hot.clear()
        hot[key] = value
