"""Every header syncperf hands an OTLP exporter can be sent by that exporter's protocol.

gRPC refuses a metadata key outside ``[0-9a-z_.-]`` (``x!y`` is a token, not a key), a
value outside printable ASCII (``é``, a tab) and a ``-bin`` key whose value is text; over
HTTP ``requests`` refuses a value with a leading blank and ``http.client`` one that is not
latin-1 (``%FF`` decodes to U+FFFD). Each of those failed every export of its signal, the
good headers with it: the variables' entry is dropped with a warning naming its position,
a header given in code is a ``ConfigError``; neither ever quotes the name or the value.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncperf import ConfigError
from syncperf.export._settings import headers_of

SECRET = "pl4nted-S3CRET-x9"
PROTOCOLS = ["grpc", "http/protobuf"]
SIGNALS = ["TRACES", "METRICS"]
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
"""Any text: non-ASCII, control characters, lone surrogates."""


def _sendable(protocol: str, name: str, value: str) -> bool:
    """What the exporter of ``protocol`` sends (the documented rule: printable ASCII)."""
    if not re.fullmatch(r"[\x20-\x7e]*", value) or value.startswith(" "):
        return False
    if protocol == "grpc":
        return bool(re.fullmatch(r"[0-9a-z_.\-]+", name)) and not name.endswith("-bin")
    from requests.utils import check_header_validity

    try:
        check_header_validity((name, value))
        name.encode("latin-1"), value.encode("latin-1")
    except Exception:
        return False
    return bool(re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9a-z]+", name))


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "entry",
    [
        "k=%C3%A9",  # é once decoded
        "k=%FF",  # U+FFFD once decoded
        "k=a%09b",  # a tab
        "k=%20lead",  # a leading blank once decoded
        "k=%7F",
        "x!y=1",  # a token, not a gRPC key
        "x~y=1",
        "x-bin=1",  # gRPC wants bytes for it
    ],
)
def test_a_header_entry_the_exporter_cannot_send_is_dropped_the_others_kept(
    caplog: pytest.LogCaptureFixture, protocol: str, entry: str
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"OTEL_EXPORTER_OTLP_HEADERS": f"good=1,{entry},after=2"}
    headers = headers_of(None, protocol, "METRICS", env)
    assert headers["good"] == "1" and headers["after"] == "2"
    assert all(_sendable(protocol, k, v) for k, v in headers.items()), headers
    if not _sendable(protocol, *entry.lower().split("=")):  # gRPC-only names pass over HTTP
        assert len(headers) == 2
        warned = [r.getMessage() for r in caplog.records if r.name == "syncperf"]
        assert any("OTEL_EXPORTER_OTLP_HEADERS entry 2" in m for m in warned), warned


@pytest.mark.parametrize("signal", SIGNALS)
def test_the_per_signal_variable_is_checked_for_the_signals_protocol(signal: str) -> None:
    env = {f"OTEL_EXPORTER_OTLP_{signal}_HEADERS": "good=1,x!y=2,k=%C3%A9"}
    assert headers_of(None, "grpc", signal, env) == {"good": "1"}
    assert headers_of(None, "http/protobuf", signal, env) == {"good": "1", "x!y": "2"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "headers",
    [
        {"tenant": "M\u00fcnchen" + SECRET},
        {"x!y": SECRET},
        {"x-bin": SECRET},
        {"k": " " + SECRET},
        {"k": SECRET + "\t"},
        {"k": SECRET + "\ud800"},
        {"M\u00fcnchen" + SECRET: "1"},
    ],
)
def test_a_header_in_code_the_exporter_cannot_send_is_a_config_error_not_quoting_it(
    caplog: pytest.LogCaptureFixture, protocol: str, headers: dict[str, str]
) -> None:
    caplog.set_level(logging.DEBUG)
    ((name, value),) = headers.items()
    if _sendable(protocol, name.lower(), value):  # x!y and x-bin are fine over HTTP
        assert headers_of(headers, protocol, "TRACES", {}) == {name.lower(): value}
        return
    with pytest.raises(ConfigError) as info:
        headers_of(headers, protocol, "TRACES", {})
    assert info.value.option == "headers"
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.value)
    assert "M\u00fcnchen" not in str(info.value)
    assert SECRET not in _logged(caplog)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    protocol=st.sampled_from(PROTOCOLS),
    signal=st.sampled_from(SIGNALS),
    name=ANY_TEXT,
    value=ANY_TEXT,
    encode=st.booleans(),
)
@example(protocol="grpc", signal="TRACES", name="TRA", value="\x1f", encode=False)  # in the text
def test_any_header_variable_entry_leaves_only_sendable_headers_and_never_logs_it(
    protocol: str, signal: str, name: str, value: str, encode: bool
) -> None:
    raw_value = SECRET + value
    if encode:
        raw_value = quote(raw_value, safe="", errors="surrogatepass")
    env = {f"OTEL_EXPORTER_OTLP_{signal}_HEADERS": f"{name}={raw_value},good=1"}
    with _captured() as records:
        headers = headers_of(None, protocol, signal, env)
    assert headers.get("good") == "1"
    assert all(_sendable(protocol, k, v) for k, v in headers.items()), headers
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in records)
    assert SECRET not in logged
    for record in records:  # nothing of the entry: only what syncperf says of any entry
        assert record.msg == "syncperf: ignoring %s (%s, not quoted): expected %s"
        var, described, accepted = record.args  # type: ignore[misc]
        assert re.fullmatch(rf"OTEL_EXPORTER_OTLP_{signal}_HEADERS entry \d+", var)
        assert re.fullmatch(r"a str of length \d+", described)
        assert accepted == "name=value, the value URL-encoded ASCII"


@settings(max_examples=300, deadline=None)
@given(protocol=st.sampled_from(PROTOCOLS), name=ANY_TEXT, value=ANY_TEXT)
def test_any_header_in_code_is_sendable_or_a_config_error_not_quoting_it(
    protocol: str, name: str, value: str
) -> None:
    planted = {name + SECRET: value, "good": SECRET + value}
    with _captured() as records:
        try:
            headers = headers_of(planted, protocol, "METRICS", {})
        except ConfigError as error:
            assert error.option == "headers"
            assert SECRET not in str(error) and SECRET not in repr(error.value)
        else:
            assert all(_sendable(protocol, k, v) for k, v in headers.items()), headers
    assert not any(SECRET in f"{r.getMessage()} {r.args!r}" for r in records)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _captured:
    """Every record of every logger while in the block (hypothesis runs many examples)."""

    def __enter__(self) -> list[logging.LogRecord]:
        self.handler, root = _Records(), logging.getLogger()
        self.level = root.level
        root.addHandler(self.handler)
        root.setLevel(logging.DEBUG)
        return self.handler.records

    def __exit__(self, *exc: Any) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self.level)


@pytest.mark.parametrize("entry", ["x!y=1", "k=%C3%A9", "k=a%09b", "x-bin=1", "Good=%20ok"])
def test_grpc_itself_accepts_every_header_kept(entry: str) -> None:
    grpc = pytest.importorskip("grpc")
    headers = headers_of(None, "grpc", "TRACES", {"OTEL_EXPORTER_OTLP_HEADERS": entry + ",k2=v"})
    channel = grpc.insecure_channel("127.0.0.1:9")
    call = channel.unary_unary("/x.Y/Z", request_serializer=bytes, response_deserializer=bytes)
    try:
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=2, metadata=tuple(headers.items()))
    finally:
        channel.close()
    assert info.value.code() != grpc.StatusCode.INTERNAL, (
        info.value.details()
    )  # not "invalid metadata"
