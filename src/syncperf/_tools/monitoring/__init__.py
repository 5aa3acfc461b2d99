"""Operations tooling behind ``syncperf rules`` and ``syncperf dashboard``.

Everything here is generated from one catalogue of emitted metrics (``_metrics``), so rules,
monitors and dashboards can only name metrics syncperf really emits.
"""
