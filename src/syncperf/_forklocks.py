"""Locks a forked child makes anew.

A lock another thread of the parent held at ``fork()`` stays held forever in the child (that
thread does not exist there): the child's first operation that takes it would hang. An owner
registers the lock attributes it takes on the request path (or in ``configure``) with
``renew_in_child``; in a forked child each is replaced by a new, free lock of its kind. (A
``with`` block the forking thread was in releases the lock it took, the parent's.)
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

_RLOCK = type(threading.RLock())
_owners: weakref.WeakKeyDictionary[Any, tuple[str, ...]] = weakref.WeakKeyDictionary()
"""Each owner's lock attributes (owners are kept weakly: they compare by identity)."""


def renew_in_child(owner: object, *attributes: str) -> None:
    """Replace ``owner``'s lock ``attributes`` with new ones in a forked child."""
    _owners[owner] = attributes


def _after_fork_in_child() -> None:
    for owner, attributes in list(_owners.items()):
        for name in attributes:
            reentrant = isinstance(getattr(owner, name, None), _RLOCK)
            setattr(owner, name, threading.RLock() if reentrant else threading.Lock())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
