"""Cross-process locks that a crash releases: only one scheduler per store.

SQLite: an flock on a file beside the database (the kernel drops it when the process dies).
PostgreSQL: a session advisory lock kept alive against idle-session timeouts. Each yields an
Event that is set if the lock is lost while held; the holder must then stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import LockedError

log = logging.getLogger(__name__)


@contextmanager
def file_lock(database: str, name: str, busy_message: str) -> Iterator[threading.Event]:
    """An flock beside the SQLite file `database` (none for an in-memory database)."""
    if not database or database == ":memory:":
        yield threading.Event()
        return
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    with Path(f"{database}.{digest}.lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(busy_message) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{name} pid {os.getpid()}\n")
        handle.flush()
        yield threading.Event()  # an flock is never lost while the file is open


@contextmanager
def session_lock(engine: Engine, name: str, busy_message: str) -> Iterator[threading.Event]:
    """A PostgreSQL session advisory lock, kept alive (see `_SessionLock`)."""
    held = _SessionLock(engine, name, busy_message)
    try:
        yield held.lost
    finally:
        held.release()


class _SessionLock:
    """A PostgreSQL session advisory lock that outlives idle-session timeouts.

    The lock belongs to one session, on a connection in autocommit (never idle in a transaction).
    A thread keeps the session busy well within `idle_session_timeout` (or every few seconds, for
    a proxy that closes idle connections); if the session is lost anyway, it takes the lock again
    on a new one, and when another process got it first, `lost` is set.
    """

    def __init__(self, engine: Engine, name: str, busy_message: str) -> None:
        self.engine, self.name = engine, name
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self.lost = threading.Event()
        self._done = threading.Event()
        self._mutex = threading.Lock()
        self._conn = self._take()
        if self._conn is None:
            raise LockedError(busy_message)
        timeout_ms = self._conn.execute(sa.text(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'idle_session_timeout'")).scalar() or 0
        self._every = min(5.0, timeout_ms / 3000) if timeout_ms else 5.0
        self._thread = threading.Thread(target=self._keep, name=f"lock-{name}", daemon=True)
        self._thread.start()

    def _take(self) -> Connection | None:
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar():
            return conn
        conn.close()
        return None

    def _keep(self) -> None:
        while not self._done.wait(self._every):
            with self._mutex:
                if self._alive():
                    continue
                try:
                    self._conn = self._take()
                except sa.exc.DBAPIError:
                    continue  # the server is away: try again at the next beat
                if self._conn is None:
                    log.error("another process holds the %s lock now; stopping", self.name)
                    self.lost.set()
                    return

    def _alive(self) -> bool:
        """Whether the session holding the lock still answers; a lost one is closed."""
        if self._conn is None:
            return False
        try:
            self._conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.DBAPIError as exc:
            log.warning("the session holding the %s lock was lost (%s); taking the lock again", self.name,
                        str(exc.orig or exc).strip().splitlines()[0])
        with contextlib.suppress(sa.exc.DBAPIError):
            self._conn.close()
        self._conn = None
        return False

    def release(self) -> None:
        self._done.set()
        self._thread.join()
        with self._mutex, contextlib.suppress(sa.exc.DBAPIError):
            if self._conn is not None:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.close()
