"""Serve the demo's sync service alone (the load benchmark runs it in a subprocess).

``python -m syncperf._tools.demo._serve --port 8000 [--plain] [--database-url URL]``: ``--plain``
serves the same service without syncperf (no middleware, engine hooks or outbox).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from syncperf._tools.demo._service import Service


def main(argv: Sequence[str] | None = None) -> None:
    """Run the service under uvicorn until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--database-url")
    parser.add_argument("--plain", action="store_true", help="without syncperf")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="syncperf-serve-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'demo.db'}"
        service = Service(url, instrumented=not args.plain)
        service.start_relay()
        try:
            uvicorn.run(
                service.app,
                host="127.0.0.1",
                port=args.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                loop="asyncio",
                http="h11",
            )
        finally:
            service.close()


if __name__ == "__main__":
    main()
