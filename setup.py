"""The optional compiled hot path (``syncperf._speedups``): built when a C compiler and the
Python headers are there, skipped (with a warning) when not; syncperf then runs its
pure-Python path, which ``SYNCPERF_NO_EXTENSIONS=1`` also selects at run time. Everything
else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "syncperf._speedups",
            ["src/syncperf/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Werror=implicit-function-declaration"],
        )
    ]
)
