"""The SQL store shared by modelmon's features: SQLite by default, PostgreSQL by URL.

``open_store()`` resolves the URL, creates a tuned engine and migrates the database to the
newest revision, once per URL and process. Tables live in one module per feature
(``modelmon.store.runs`` for training runs) on the shared ``metadata``; a new feature adds
its module and a new revision in ``migrations/versions`` that revises the previous head.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from modelmon.store.engine import (
    STORE_URL_ENV,
    Store,
    StoreError,
    create_store_engine,
    resolve_store_url,
)
from modelmon.store.migrate import upgrade

__all__ = [
    "STORE_URL_ENV",
    "Store",
    "StoreError",
    "close_store",
    "open_store",
    "resolve_store_url",
]

_stores: dict[str, Store] = {}
_lock = threading.Lock()


def open_store(url: str | URL | Path | Store | None = None) -> Store:
    """The store at ``url`` (see ``resolve_store_url``), migrated to the newest schema."""
    if isinstance(url, Store):
        return url
    resolved = resolve_store_url(url)
    key = resolved.render_as_string(hide_password=False)
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = Store(resolved, create_store_engine(resolved))
            try:
                upgrade(store.engine)
            # Unreachable or refused (OperationalError), not a database ("file is not a
            # database": DatabaseError), no right to migrate (ProgrammingError): one clear
            # error naming the store, for the CLI and the report, not a traceback.
            except DBAPIError as exc:
                store.engine.dispose()
                raise StoreError(
                    f"cannot open the store {store.display_url}: {exc.orig or exc}"
                ) from None
            _stores[key] = store
        return store


def close_store(url: str | URL | Path | Store | None = None) -> None:
    """Close the pooled connections of the store at ``url`` if it is open; the next
    ``open_store`` opens it afresh."""
    resolved = url.url if isinstance(url, Store) else resolve_store_url(url)
    with _lock:
        store = _stores.pop(resolved.render_as_string(hide_password=False), None)
    if store is not None:
        store.engine.dispose()


def _forget_stores_in_child() -> None:
    # A forked child (a PyTorch DataLoader worker, say) must not use or close the parent's
    # pooled connections: closing a PostgreSQL one would end the parent's session too.
    for store in _stores.values():
        store.engine.dispose(close=False)
    _stores.clear()


os.register_at_fork(after_in_child=_forget_stores_in_child)
