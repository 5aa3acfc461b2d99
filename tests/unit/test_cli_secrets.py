"""A secret in an option's value (a URL's ``user:password@``, its ``?token=``) never reaches
stderr or a generated file, however long the value."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from syncperf import cli
from syncperf._tools.monitoring import rules
from syncperf._tools.monitoring._options import RuleOptions
from syncperf._tools.monitoring.rules import FORMATS
from syncperf.exceptions import ConfigError

SECRET = "Sup3rS3cretPassw0rdLonger1234"
WINDOWS = ["--before", "-2h..-1h", "--after", "-1h..now"]


def _stderr_of(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli.main(argv)
        except SystemExit as exit_:
            status = exit_.code  # type: ignore[assignment]
    return status, err.getvalue()


def _leaks(secret: str, text: str) -> bool:
    """Any 6 characters of ``secret`` in ``text``: a password cut short still leaks."""
    return any(secret[i : i + 6] in text for i in range(len(secret) - 5))


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", *WINDOWS, "--timeout", f"https://admin:{SECRET}@prometheus.internal:9090"],
        ["demo", "--duration", f"postgresql://app:{SECRET}@db/app"],
    ],
)
def test_a_long_password_in_a_number_option_is_not_shown(argv: list[str]) -> None:
    status, err = _stderr_of(argv)
    assert status == 2 and err.count("\n") == 1, err
    assert not _leaks(SECRET, err) and "***@" in err, err


OPTIONS = [
    ["compare", *WINDOWS, "--timeout"],
    ["compare", *WINDOWS, "--alpha"],
    ["compare", *WINDOWS, "--min-change"],
    ["compare", *WINDOWS, "--min-rate-change"],
    ["demo", "--duration"],
    ["demo", "--clients"],
    ["demo", "--seed"],
    ["bench", "--loops"],
    ["bench", "--rounds"],
    ["rules", "--p95-seconds"],
    ["rules", "--runbook-url"],
]
WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~/:", max_size=60)
TOKEN = st.text("QXZJKVW", min_size=8)  # letters no message or other part of the value holds


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(OPTIONS),
    WORD,
    st.sampled_from(["https", "http", "postgresql+psycopg", "redis"]),
    st.booleans(),
    TOKEN,
    WORD,
)
def test_no_option_value_shows_a_planted_secret(
    option: list[str], before: str, scheme: str, in_query: bool, secret: str, after: str
) -> None:
    host = f"{before}{scheme}://"
    value = f"{host}h.example/{after}?token={secret}" if in_query else f"{host}u:{secret}@h/{after}"
    status, err = _stderr_of([*option, value])
    assert status == 2 and err.count("\n") == 1, err
    assert secret not in err and not _leaks(secret, err), err


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:hunter2@wiki.example.com/run books",
        "https://wiki.example.com/runbooks?token=hunter2&x=1 ",
    ],
)
def test_a_bad_runbook_url_is_shown_without_its_secrets(url: str) -> None:
    status, err = _stderr_of(["rules", "--runbook-url", url])
    assert status == 2 and err.count("\n") == 1, err
    assert "hunter2" not in err and "admin" not in err and "runbook_url" in err, err


@pytest.mark.parametrize("fmt", ["prometheus", "datadog", "promtool-tests"])
def test_a_runbook_url_with_credentials_is_refused_not_published(fmt: str) -> None:
    url = "https://admin:hunter2@wiki.example.com/runbooks"
    status, err = _stderr_of(["rules", "--format", fmt, "--runbook-url", url])
    assert status == 2 and err.count("\n") == 1, err
    assert "hunter2" not in err and "admin" not in err, err
    assert "runbook_url" in err and "user:password" in err, err


@pytest.mark.parametrize("netloc", ["admin:hunter2@wiki", "admin@wiki", ":hunter2@wiki", "@wiki"])
def test_rule_options_refuse_a_runbook_url_with_userinfo(netloc: str) -> None:
    with pytest.raises(ConfigError) as info:
        RuleOptions(runbook_url=f"https://{netloc}.example.com/runbooks")
    assert "hunter2" not in str(info.value) and "admin" not in str(info.value)
    assert info.value.option == "runbook_url"


def test_a_runbook_url_with_an_at_in_its_path_is_kept() -> None:
    url = "https://wiki.example.com/@team/runbooks"
    doc = yaml.safe_load(rules.render(RuleOptions(runbook_url=url)))
    assert doc["groups"][1]["rules"][0]["annotations"]["runbook_url"].startswith(url + "#")


SECRET_PARAMETERS = [
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "secret",
    "client_secret",
    "sig",
    "signature",
    "X-Amz-Signature",
    "auth",
    "private-token",
]


def _any_case(name: str) -> st.SearchStrategy[str]:
    return st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in name)).map("".join)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(SECRET_PARAMETERS).flatmap(_any_case),
    TOKEN,
    st.sampled_from(["", "space=ops&", "page=2;"]),
    st.sampled_from(["", "&lang=en"]),
    st.sampled_from(FORMATS),
)
def test_a_runbook_url_with_a_secret_query_parameter_is_refused_not_published(
    name: str, secret: str, before: str, after: str, fmt: str
) -> None:
    url = f"https://wiki.example.com/runbooks?{before}{name}={secret}{after}"
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder, "rules.out")
        argv = ["rules", "--format", fmt, "--runbook-url", url, "-o", str(out)]
        status, err = _stderr_of(argv)
        assert status == 2 and err.count("\n") == 1, err
        assert "runbook_url" in err and not _leaks(secret, err), err
        assert not out.exists() or not _leaks(secret, out.read_text())
    with pytest.raises(ConfigError) as info:
        RuleOptions(runbook_url=url)
    assert info.value.option == "runbook_url"
    assert not _leaks(secret, str(info.value)) and not _leaks(secret, repr(info.value.value))


@pytest.mark.parametrize(
    "query", ["%74oken=QXZJKVWQ", "x=1&Access%5FToken=QXZJKVWQ", "a=b#access_token=QXZJKVWQ"]
)
def test_an_encoded_or_fragment_secret_parameter_is_refused_too(query: str) -> None:
    with pytest.raises(ConfigError) as info:
        RuleOptions(runbook_url=f"https://wiki.example.com/runbooks?{query}")
    assert info.value.option == "runbook_url" and "QXZJKVWQ" not in str(info.value)


@pytest.mark.parametrize("query", ["space=ops", "page=2&keyword=sync", "monkey=1&author=me"])
def test_a_runbook_url_with_ordinary_query_parameters_is_kept(query: str) -> None:
    url = f"https://wiki.example.com/runbooks?{query}"
    doc = yaml.safe_load(rules.render(RuleOptions(runbook_url=url)))
    link = doc["groups"][1]["rules"][0]["annotations"]["runbook_url"]
    assert link == url + "#syncpushconflictratehigh"
