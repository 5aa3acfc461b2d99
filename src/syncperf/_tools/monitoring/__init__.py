"""Operations tooling behind ``syncperf rules`` and ``syncperf dashboard``.

Everything here is generated from the catalogue of emitted metrics
(``syncperf._metrics.catalogue``), so rules, monitors and dashboards can only name metrics
syncperf really emits.
"""
