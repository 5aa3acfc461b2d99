from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

class Operation:
    def __init__(self, rt: Any = None, series: Any = None, start_ns: int = 0) -> None: ...
    def record_items(
        self, n: int, *, entity: str | None = None, change: str | None = None
    ) -> None: ...

class Values:
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> int: ...
    def take(self) -> list[int]: ...

class Count:
    def __len__(self) -> int: ...
    def append(self, value: None, /) -> None: ...
    def pop(self) -> None: ...
    def clear(self) -> None: ...

class FastPath:
    def __init__(
        self,
        fn: Callable[..., Any],
        slow: Callable[..., Any],
        bind: Callable[[Any], Any],
        settle: Callable[..., Any],
        raised: Callable[[Any, BaseException], None],
        end: Callable[[Any, int], None],
        failed: Callable[[Any, Exception], None],
        runtime: dict[str, Any],
        op_type: type[Operation],
        plain: frozenset[type],
        *,
        before: Callable[..., None] | None = None,
        after: Callable[..., None] | None = None,
        fed: bool = False,
    ) -> None: ...
    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

def operations(current: ContextVar[Any], noop: Any, record_items: Callable[..., None]) -> None: ...
def current_operation() -> Any: ...
def setup(
    clocks: dict[str, Any],
    fold_hook: Callable[[Any, bool], None],
    fold_at: int,
    max_queued: int,
    pairs_at: int,
) -> bool: ...
def end_plain(op: Any, now: int, end_ns: int | None = None, /) -> int: ...
def fold(
    ended: Any,
    queued: dict[Any, list[int] | Values],
    counted: dict[Any, list[int] | Values],
    failures: list[Exception],
    rest: Callable[[tuple[Any, ...]], None],
    db_instrumented: bool,
    conflict_series: dict[Any, Any],
) -> None: ...
def record(
    series: Any, values: list[int] | Values, limits: tuple[int, ...], scale: int
) -> bool: ...
def forget_pending() -> None: ...
def bind_read(
    twins: tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]],
    values: tuple[bytes, int, bytes, frozenset[str], frozenset[str]],
) -> None: ...
def read_headers(
    headers: Any, idem_name: Any, fields: Any, /
) -> tuple[int, bytes | None, list[bytes] | None, bool, bool] | None: ...
def read_scope(scope: Any, /) -> tuple[str, str, str] | None: ...
def mark_replayed(ex: Any, headers: Any, name: Any, /) -> None: ...
def usable() -> bool: ...
def bind_spans(
    built: tuple[type, type, Any, tuple[Any, ...]],
    context: tuple[
        Any, type, dict[str, Any], Any, str, Callable[[Any], Any], Callable[[Any], None]
    ],
) -> None: ...
def decide_span(standard: tuple[Any, ...], op: Any, parent: Any, attributes: Any, /) -> Any: ...
def start(
    rt: Any,
    bound: Any,
    kind: Any = ...,
    attributes: Any = None,
    now: int = 0,
    current: Any = None,
) -> Any: ...
def sending(ex: Any, message: Any, /) -> bool: ...
