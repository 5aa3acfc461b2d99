"""A real Prometheus (Debian's binary) on loopback, scraping given targets every second."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import free_port

PROMETHEUS = shutil.which("prometheus")


@contextlib.contextmanager
def running_prometheus(
    root: Path, targets: list[str], *, rules: str | None = None, metrics_path: str = "/metrics"
) -> Iterator[str]:
    """Prometheus scraping ``targets`` (``host:port``) every second; yields its base URL."""
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "syncperf",
                "metrics_path": metrics_path,
                "static_configs": [{"targets": targets}],
            }
        ],
    }
    if rules is not None:
        (root / "rules.yml").write_text(rules)
        config["rule_files"] = [str(root / "rules.yml")]
    (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    log = (root / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert process.poll() is None, (root / "prometheus.log").read_text()
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query."""
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def value(base: str, promql: str, **labels: str) -> float | None:
    """The value of the first sample whose labels include ``labels``, or None."""
    for sample in query(base, promql):
        if all(sample["metric"].get(k) == v for k, v in labels.items()):
            return float(sample["value"][1])
    return None
