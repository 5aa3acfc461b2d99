"""``syncperf compare`` talking to Prometheus: the ``--prometheus`` URL (credentials, query
string, fragment), redirects, and hostile ``--selector`` and window values, against loopback
servers (HTTPS ones with a certificate made by ``openssl``)."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncperf._tools._window import CompareError, Prometheus, check_selector, parse_window
from tests.unit.test_compare import (
    EMPTY,
    WINDOWS,
    Answer,
    Received,
    _fake_prometheus,
    _json,
    _run,
    _send,
)

CLOSED = ["--prometheus", "http://127.0.0.1:1", "--timeout", "2"]
"""Nothing listens on port 1."""
BASIC = "Basic " + base64.b64encode(b"admin:s3cret").decode()


def _one_short_line(err: str) -> None:
    assert len(err.strip().splitlines()) == 1, err
    assert len(err) < 300, err[:300]
    assert err.startswith("syncperf compare: ")


# --- --selector --------------------------------------------------------------------------


@pytest.mark.parametrize("selector", ["x" * 1_000_000, "}" + "\n" * 10_000, "{" * 100_000])
def test_a_bad_selector_is_one_short_line_whatever_its_length(
    selector: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, [*WINDOWS, *CLOSED, "--selector", selector])
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "--selector" in err


def test_a_selector_of_undecodable_bytes_is_a_usage_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # what Python makes of a command-line argument that is not UTF-8
    status, out, err = _run(capsys, [*WINDOWS, *CLOSED, "--selector", 'job="\udcff"'])
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "--selector" in err
    err.encode("utf-8")


def _short_and_printable(error: CompareError) -> None:
    message = str(error)
    assert len(message) <= 150 and message.isprintable(), message
    message.encode("utf-8")


@given(st.text(max_size=400))
def test_any_selector_can_be_sent_or_is_a_short_printable_error(selector: str) -> None:
    try:
        inner = check_selector(selector)
    except CompareError as error:
        _short_and_printable(error)
    else:
        inner.encode("utf-8")  # the query body is UTF-8


@given(st.text(max_size=400))
def test_any_window_is_a_window_or_a_short_printable_error(raw: str) -> None:
    try:
        parse_window(raw, "--before", now=1e9)
    except CompareError as error:
        _short_and_printable(error)


# --- the URL's query string and fragment ---------------------------------------------------


def test_the_urls_query_string_goes_with_every_query_and_is_never_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with _fake_prometheus(_json(EMPTY)) as (url, seen):
        prometheus = url + "/prom/?token=s3cret&org=1"
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", prometheus])
    assert (status, err) == (0, "")
    assert seen and {h.path for h in seen} == {"/prom/api/v1/query?token=s3cret&org=1"}
    assert all(b"query=" in h.body for h in seen)  # the query itself stays in the body
    assert "s3cret" not in out


def _server_error(handler: Received) -> None:
    _send(handler, 500, b"<html>internal error</html>")


def _not_json(handler: Received) -> None:
    _send(handler, 200, b"Prometheus? no")


@pytest.mark.parametrize("answer", [_server_error, _not_json, _json({"status": "error"})])
def test_a_token_in_the_query_string_is_never_in_an_error(
    answer: Answer, capsys: pytest.CaptureFixture[str]
) -> None:
    with _fake_prometheus(answer) as (url, seen):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url + "?token=s3cret"])
    assert seen and (status, out) == (2, "")
    _one_short_line(err)
    assert url in err and "s3cret" not in err


@pytest.mark.parametrize("code", [401, 403, 404, 502])
@pytest.mark.parametrize(
    "body", [{"message": "invalid credentials"}, {}, [], {"status": "success"}, "denied"]
)
def test_an_http_error_with_json_that_is_not_prometheus_names_the_status(
    code: int, body: object, capsys: pytest.CaptureFixture[str]
) -> None:
    def answer(handler: Received) -> None:
        _send(handler, code, json.dumps(body).encode(), **{"Content-Type": "application/json"})

    with _fake_prometheus(answer) as (url, _):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert f"answered HTTP {code}" in err


def test_an_http_error_with_prometheus_json_shows_prometheus_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def answer(handler: Received) -> None:
        _send(handler, 400, json.dumps({"status": "error", "error": "bad query"}).encode())

    with _fake_prometheus(answer) as (url, _):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, out) == (2, "")
    assert "Prometheus rejected a query: bad query" in err


PRINTABLE = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"))


@settings(max_examples=30, deadline=None)
@given(st.text(PRINTABLE, max_size=40))
def test_any_query_string_is_sent_percent_encoded_and_never_shown(token: str) -> None:
    token = token.replace("#", "")
    with _fake_prometheus(_server_error) as (url, seen), pytest.raises(CompareError) as raised:
        Prometheus(f"{url}/p?k=s3cret{token}", timeout=5).query("up", 0.0)
    assert "s3cret" not in str(raised.value)
    (request,) = seen
    path, _, query = request.path.partition("?")
    assert path == "/p/api/v1/query"
    assert query.isascii() and urllib.parse.unquote(query) == f"k=s3cret{token}"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/p?token=s3cret#part",
        "http://127.0.0.1:1/#/graph",
        "http://127.0.0.1:1/#",
        "http://admin:s3#cret@127.0.0.1:1",  # a '#' in a password must be written %23
    ],
)
def test_a_url_with_a_fragment_is_a_usage_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "--prometheus" in err and "%23" in err
    assert "s3" not in err and "part" not in err


# --- redirects -----------------------------------------------------------------------------


def _redirect(code: int, to: str) -> Answer:
    """Redirect every request to ``to`` plus the request's path (what a proxy does)."""
    return lambda handler: _send(handler, code, b"", Location=to + handler.path)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_without_credentials_a_redirect_to_another_server_is_followed(
    code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with _fake_prometheus(_json(EMPTY)) as (target, received):
        other = target.replace("127.0.0.1", "localhost")
        with _fake_prometheus(_redirect(code, other)) as (url, first):
            status, _, err = _run(capsys, [*WINDOWS, "--prometheus", url + "?token=t"])
    assert (status, err) == (0, ""), err
    assert len(received) == len(first) > 0
    for request in received:
        assert request.headers.get("Authorization") is None
        if code in (307, 308):  # repeat the POST
            assert request.command == "POST" and b"query=" in request.body
            assert request.path == "/api/v1/query?token=t"
        else:  # a GET, as HTTP clients do, the query moved into the URL
            assert request.command == "GET" and request.body == b""
            assert request.path.startswith("/api/v1/query?token=t&query=")
            assert "&time=" in request.path


@pytest.mark.parametrize("code", [302, 308])
def test_a_redirect_on_the_same_server_keeps_the_credentials(
    code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    def proxy(handler: Received) -> None:
        if handler.path.startswith("/old/"):
            _send(handler, code, b"", Location=handler.path.replace("/old/", "/new/", 1))
        else:
            _json(EMPTY)(handler)

    with _fake_prometheus(proxy) as (url, seen):
        authed = url.replace("http://", "http://admin:s3cret@") + "/old"
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", authed])
    assert (status, err) == (0, ""), err
    assert {h.path.split("?")[0] for h in seen} == {"/old/api/v1/query", "/new/api/v1/query"}
    assert {h.headers.get("Authorization") for h in seen} == {BASIC}
    assert "s3cret" not in out


def _elsewhere(target: str) -> list[str]:
    """Origins other than ``target``'s (``http://127.0.0.1:PORT``) that reach it or not."""
    port = int(target.rsplit(":", 1)[1])
    return [
        target.replace("127.0.0.1", "localhost"),  # another host name
        f"https://127.0.0.1:{port}",  # another scheme
        f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}",  # another port
    ]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_credentials_never_follow_a_redirect_to_another_origin(
    which: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        _fake_prometheus(_json(EMPTY)) as (target, received),
        _fake_prometheus(_redirect(302, _elsewhere(target)[which])) as (url, _),
    ):
        authed = url.replace("http://", "http://admin:s3cret@")
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", authed])
    assert received == []
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "--prometheus" in err and "302" in err and "another server" in err
    assert "s3cret" not in err and "admin" not in err


@pytest.mark.parametrize(
    "location",
    ["ftp://127.0.0.1:1/x", "http://evil:pw@127.0.0.1:1/api/v1/query", "file:///etc/passwd"],
)
def test_a_redirect_that_is_not_plain_http_is_refused(
    location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with _fake_prometheus(lambda h: _send(h, 302, b"", Location=location)) as (url, _):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "302" in err and "pw" not in err and "passwd" not in err


def test_a_redirect_loop_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with _fake_prometheus(lambda h: _send(h, 302, b"", Location=h.path)) as (url, seen):
        status, out, err = _run(capsys, [*WINDOWS, "--prometheus", url])
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "302" in err and 1 < len(seen) <= 11


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context for 127.0.0.1 whose self-signed certificate this process trusts."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read by each new client context
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture
def https_redirecting_to_http(tls: ssl.SSLContext) -> Iterator[tuple[str, list[Received]]]:
    """An HTTPS server redirecting to an HTTP one on the same host; yields the HTTPS URL and
    what the HTTP one received."""
    with (
        _fake_prometheus(_json(EMPTY)) as (plain, received),
        _fake_prometheus(_redirect(308, plain), tls=tls) as (url, _),
    ):
        yield url, received


@pytest.mark.parametrize("credentials", ["", "admin:s3cret@"])
def test_a_redirect_from_https_to_http_is_refused(
    credentials: str,
    https_redirecting_to_http: tuple[str, list[Received]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, received = https_redirecting_to_http
    authed = url.replace("https://", f"https://{credentials}")
    status, out, err = _run(capsys, [*WINDOWS, "--prometheus", authed])
    assert received == []
    assert (status, out) == (2, "")
    _one_short_line(err)
    assert "308" in err and "https to http" in err and "s3cret" not in err


def test_https_redirects_on_the_same_server_keep_the_credentials(
    tls: ssl.SSLContext, capsys: pytest.CaptureFixture[str]
) -> None:
    def proxy(handler: Received) -> None:
        if handler.path.startswith("/old/"):
            _send(handler, 301, b"", Location=handler.path.replace("/old/", "/new/", 1))
        else:
            _json(EMPTY)(handler)

    with _fake_prometheus(proxy, tls=tls) as (url, seen):
        authed = url.replace("https://", "https://admin:s3cret@") + "/old"
        status, _, err = _run(capsys, [*WINDOWS, "--prometheus", authed])
    assert (status, err) == (0, ""), err
    assert {h.headers.get("Authorization") for h in seen} == {BASIC}
    assert {h.command for h in seen} == {"POST", "GET"}
