"""What CouchDB's document adapters share: a document's entity, a revision's generation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncperf._config import check_callable, check_text
from syncperf.adapters._base import ProtocolAdapter, call, check_entity_name, field

__all__ = ["Documents", "EntityOf", "first_generation"]

EntityOf = Callable[[Any, Any], "str | None"]
"""``(doc_id, doc_or_None) -> entity name or None``."""


class Documents(ProtocolAdapter):
    """Base of the document adapters: the entity of a document (``entity``, ``type_field``,
    ``id_separator``: see ``couchdb.BulkDocs``)."""

    __slots__ = ("_entity", "_id_separator", "_key", "_type_field")

    def __init__(
        self,
        *,
        entity: EntityOf | None = None,
        type_field: str | None = "type",
        id_separator: str | None = None,
    ) -> None:
        check_callable("entity", entity)
        check_text("type_field", type_field)
        check_text("id_separator", id_separator)
        self._entity = entity
        self._type_field = type_field
        self._id_separator = id_separator
        self._key = f"syncperf.adapters.couchdb.{id(self)}"

    def _entity_of(self, doc_id: Any, doc: Any) -> str | None:
        """The callback's answer; else the type field; else the ID's prefix (a tombstone
        ``{_id, _rev, _deleted}`` has no type field: only its ID can name its entity)."""
        entity_fn = self._entity
        if entity_fn is not None:
            return check_entity_name(call(entity_fn, doc_id, doc), "entity callback")
        type_field = self._type_field
        if doc is not None and type_field is not None:
            value = field(doc, type_field)
            if isinstance(value, str) and value:
                return value
        separator = self._id_separator
        if separator is not None and isinstance(doc_id, str):
            head, sep, _ = doc_id.partition(separator)
            if sep and head:
                return head
        return None


def first_generation(rev: Any) -> bool | None:
    """Whether revision ``N-hash`` is a document's first (None when not a revision)."""
    if not isinstance(rev, str):
        return None
    generation, sep, _ = rev.partition("-")
    if not sep:
        return None
    return generation == "1"
