"""Mutator names to entities and change types, memoised (Replicache's and Zero's mutators)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from syncperf._gate import MAX_NAME
from syncperf._operation import CHANGES
from syncperf.adapters._base import call, check_change, check_entity_name
from syncperf.exceptions import ConfigError

__all__ = ["NameCache"]


class NameCache:
    """Maps a low-cardinality name (a mutator name) to ``(entity, change)``, memoised.

    ``entity`` and ``change`` are each a mapping, a callable or None; ``default_entity``
    applies when ``entity`` is None. At most ``limit`` names are memoised, and only names of
    up to ``MAX_NAME`` characters (an entity's limit): names come from clients, and a memo
    must not keep what they send (1024 names of 1 MB each); a longer name is resolved again
    each time it is seen.
    """

    __slots__ = ("_change", "_default", "_entity", "_limit", "_memo")

    def __init__(
        self,
        entity: Mapping[str, str] | Callable[[str], str | None] | None,
        change: Mapping[str, str] | Callable[[str], str | None] | None,
        default_entity: Callable[[str], str | None],
        limit: int = 1024,
    ) -> None:
        _check_map("entity", entity, allowed=None)
        _check_map("change", change, allowed=CHANGES)
        self._entity = entity
        self._change = change
        self._default = default_entity
        self._limit = limit
        self._memo: dict[str, tuple[str | None, str | None]] = {}

    def __call__(self, key: str) -> tuple[str | None, str | None]:
        if len(key) > MAX_NAME:  # never a valid entity: not worth keeping a client's bytes
            return self._resolve(key)
        found = self._memo.get(key)
        if found is None:
            found = self._resolve(key)
            if len(self._memo) < self._limit:
                self._memo[key] = found
        return found

    def _resolve(self, key: str) -> tuple[str | None, str | None]:
        entity_map, change_map = self._entity, self._change
        if entity_map is None:
            entity = self._default(key)
        elif isinstance(entity_map, Mapping):
            entity = entity_map.get(key)
        else:
            entity = check_entity_name(call(entity_map, key), "entity callback")
        if change_map is None:
            change = None
        elif isinstance(change_map, Mapping):
            change = change_map.get(key)
        else:
            change = check_change(call(change_map, key), "change callback")
        return entity, change


def _check_map(option: str, value: Any, allowed: frozenset[str] | None) -> None:
    if value is None or (callable(value) and not isinstance(value, Mapping)):
        return
    if not isinstance(value, Mapping):
        raise ConfigError(option, value, "a mapping, a callable or None")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str) or not item:
            raise ConfigError(option, value, "a mapping of names to non-empty strings")
        if allowed is not None and item not in allowed:
            raise ConfigError(
                option, value, "a mapping whose values are " + ", ".join(sorted(allowed))
            )
