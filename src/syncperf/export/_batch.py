"""The SDK's batch span processor, with the spans it drops counted by syncperf."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from syncperf import _runtime


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor; the spans it drops (its queue is full, or it was shut
    down) are counted in ``syncperf.dropped`` as well as logged by the SDK."""

    def __init__(self, exporter: SpanExporter, **batch: Any) -> None:
        super().__init__(exporter, **batch)
        batch_processor = getattr(self, "_batch_processor", None)
        metrics = getattr(batch_processor, "_metrics", None)  # where the SDK reports each drop
        if metrics is not None:
            batch_processor._metrics = CountingDrops(metrics)  # type: ignore[union-attr]


class CountingDrops:
    """The SDK batch processor's own metrics, with each drop also counted by syncperf."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        reason = "span_export_" + ("queue_full" if error_type == "queue_full" else "shutdown")
        rt = _runtime.current()
        if count > 1:  # ``drop`` below counts one
            with rt.lock:
                rt.dropped.sum((("syncperf.reason", reason),)).add(count - 1)
        rt.drop(reason, "syncperf: the batch span processor dropped spans (%s)", error_type)
        self._inner.drop_items(count, error_type)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
