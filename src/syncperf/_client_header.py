"""The ``Sync-Client`` request header: a client's own numbers on every sync request.

The value is a Structured Field Dictionary (RFC 8941 / RFC 9651), so any structured-field
library writes and reads it::

    Sync-Client: pending=12, retries=2, last-sync-age=340, db-size=5242880, app="1.4.2"

``pending``, ``retries``, ``last-sync-age`` (seconds) and ``db-size`` (bytes) are Integers
>= 0; ``app`` is a String or Token. Unknown members are ignored (room for later ones), a
known member with another type or a negative value is dropped and counted, and a value that
is not a valid dictionary, or longer than ``MAX_HEADER`` bytes, is dropped and counted as a
whole (``syncperf.dropped``, reason ``invalid_client_header``).

The parser is a strict, allocation-light reading of the RFC's dictionary grammar (parameters,
inner lists and every bare item type are recognised and skipped where not needed): a
reference implementation takes ~100 us per header, this one a few, on every sync request.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from syncperf._client_series import REPORTED, Observed, app_version

if TYPE_CHECKING:
    from syncperf._runtime import Runtime

__all__ = ["HEADER", "MAX_HEADER", "parse", "read"]

HEADER = b"sync-client"
"""The header's name (lowercase, as ASGI servers deliver names)."""
MAX_HEADER = 512
"""Bytes of header value read at most; a longer value is dropped whole."""

_KEY = r"[a-z*][a-z0-9_\-.*]*"
_INT = r"-?[0-9]{1,15}"
_DEC = r"-?[0-9]{1,12}\.[0-9]{1,3}"
_STR_BODY = r'(?:[ !#-\[\]-~]|\\[\\"])*'
_TOKEN = r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*"
_BARE = (
    rf'(?:{_DEC}|{_INT}|"{_STR_BODY}"|{_TOKEN}|:[A-Za-z0-9+/=]*:|\?[01]|@-?[0-9]{{1,15}}'
    r'|%"(?:[ !#$&-\[\]-~]|%[0-9a-f]{2})*")'
)
_PARAMS = rf"(?:;[ ]*{_KEY}(?:={_BARE})?)*"
_INNER = rf"\([ ]*(?:{_BARE}{_PARAMS}(?:[ ]+{_BARE}{_PARAMS})*[ ]*)?\)"
_SIMPLE_VALUE = rf'(?:{_INT}|"{_STR_BODY}"|{_TOKEN})'
_INVALID = object()


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """``(simple dictionary, one simple member, one member)``, compiled on first use (not at
    ``import syncperf``: only servers whose clients send the header pay for them)."""
    simple = re.compile(  # the common shape: key=value members, Integers, Strings or Tokens
        rf"{_KEY}={_SIMPLE_VALUE}(?:[ \t]*,[ \t]*{_KEY}={_SIMPLE_VALUE})*"
    )
    simple_member = re.compile(rf'({_KEY})=(?:({_INT})|"({_STR_BODY})"|({_TOKEN}))')
    member = re.compile(
        rf"({_KEY})"
        rf'(?:=(?:({_INT})|"({_STR_BODY})"|({_TOKEN})|{_BARE}|{_INNER}){_PARAMS}|{_PARAMS})'
        r"(?:[ \t]*,[ \t]*(?=[a-z*])|[ ]*\Z)"
    )
    return simple, simple_member, member


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text) if "\\" in text else text


def parse(value: str) -> dict[str, int | str | object] | None:
    """The members of a dictionary header, or None when ``value`` is not one.

    Integer members become ``int``, String and Token members ``str``; members of any other
    type map to a placeholder (present, but not a number or a text). Later duplicates win.
    """
    value = value.strip(" ")
    members: dict[str, int | str | object] = {}
    simple, simple_member, member = _patterns()
    if simple.fullmatch(value):  # members one after another: findall reads them in order
        for key, number, text, token in simple_member.findall(value):
            if number:
                members[key] = int(number)
            elif token:
                members[key] = token
            else:
                members[key] = _unescape(text)
        return members
    pos, end, match = 0, len(value), member.match
    while pos < end:
        found = match(value, pos)
        if found is None:
            return None
        key, number, text, token = found.group(1, 2, 3, 4)
        if number is not None:
            members[key] = int(number)
        elif text is not None:
            members[key] = _unescape(text)
        elif token is not None:
            members[key] = token
        else:
            members[key] = _INVALID
        pos = found.end()
    return members


def read(rt: Runtime, raw: bytes | str, into: Observed) -> None:
    """Parse a ``Sync-Client`` value into ``into``; drop and count what is not acceptable.

    Never raises (client data is never the application's misuse, so not even in strict mode).
    """
    into.header = True
    if len(raw) > MAX_HEADER:
        _invalid(rt, "a value of more than 512 bytes")
        return
    try:
        text = raw if type(raw) is str else raw.decode("ascii")  # type: ignore[union-attr]
    except (UnicodeDecodeError, AttributeError):
        _invalid(rt, "a value that is not ASCII")
        return
    members = parse(text)
    if members is None:
        _invalid(rt, "a value that is not a structured-field dictionary")
        return
    values = into.values
    for key, value in members.items():
        if key in REPORTED:
            if type(value) is int and value >= 0:
                if values is None:
                    values = into.values = {}
                values[key] = value
            else:
                _invalid(rt, "a member that is not an integer >= 0")
        elif key == "app":
            if type(value) is str:
                into.app = app_version(value)
            else:
                _invalid(rt, "an app member that is not a string or token")


def _invalid(rt: Runtime, what: str) -> None:
    rt.drop(
        "invalid_client_header",
        "syncperf ignored a Sync-Client header (%s); see docs/clients.md for the format",
        what,
    )
