"""Protocol adapters: complete sync metrics from the payloads a handler already has.

One module per protocol; each adapter is an object with ``on_request(op, request)`` and
``on_response(op, response)`` (``syncperf.Adapter``), given to
``syncperf.instrument_sync(..., adapter=...)`` or to the ASGI middleware's routes::

    import syncperf
    from syncperf.adapters import watermelondb

    @syncperf.instrument_sync("push", adapter=watermelondb.Push())
    def push(body: dict) -> dict: ...

| module | adapters |
|---|---|
| ``replicache`` | ``Push`` (v0, v1), ``Pull`` |
| ``zero`` | ``Push`` |
| ``watermelondb`` | ``Pull``, ``Push`` |
| ``rxdb`` | ``Pull``, ``Push`` |
| ``couchdb`` | ``BulkDocs``, ``RevsDiff``, ``Changes``, ``BulkGet`` |
| ``powersync`` | ``Upload`` |

Adapters never parse JSON and never raise into the handler: a payload that does not have
the protocol's shape is counted in ``syncperf.dropped`` (``unparseable_payload``) and
logged once; strict mode (``syncperf.testing.capture()``) raises ``MeasurementError``.
See ``docs/adapters.md`` for what each adapter can and cannot see.
"""

from syncperf.adapters import couchdb, powersync, replicache, rxdb, watermelondb, zero
from syncperf.adapters._base import ProtocolAdapter

__all__ = ["ProtocolAdapter", "couchdb", "powersync", "replicache", "rxdb", "watermelondb", "zero"]
