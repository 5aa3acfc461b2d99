"""Imported first by ``syncperf/__init__``: the SDK's trace module, which reads a variable as
it loads and raises on a malformed one, quoting it, is loaded without it
(``_otel_env.import_sdk_trace``), so ``import syncperf`` never fails over it."""

from syncperf import _otel_env

_otel_env.import_sdk_trace()
