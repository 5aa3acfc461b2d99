"""The installed version of syncperf."""

__version__ = "0.1.0"
