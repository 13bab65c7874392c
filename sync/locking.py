"""One import per database at a time, and SQLite transactions that write.

PostgreSQL: a session advisory lock; MariaDB/MySQL: ``GET_LOCK``; SQLite: an exclusive
``flock`` on a file beside the database. All three vanish with the process that holds them, so
a killed import never leaves a lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connections, transaction

from sync.errors import SyncError

LOCK_NAME = "crearis-sync-import"


class LockBusy(SyncError):
    pass


def _lock_id(using: str) -> int:
    name = f"{LOCK_NAME}:{connections[using].settings_dict['NAME']}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# Locks this thread holds, by alias: taking one again (a job executed inside a caller's lock,
# see sync.jobs.imports.run_import) is a no-op.
_held = threading.local()


@contextmanager
def import_lock(using: str) -> Iterator[None]:
    """Hold the database's import lock for the block; raise LockBusy at once if it is taken
    (by another process or connection; this thread may take it again inside the block)."""
    held = _held.__dict__.setdefault("aliases", set())
    if using in held:
        yield
        return
    held.add(using)
    try:
        with _database_lock(using):
            yield
    finally:
        held.discard(using)


@contextmanager
def _database_lock(using: str) -> Iterator[None]:
    connection = connections[using]
    vendor = connection.vendor
    if vendor == "postgresql":
        lock_id = _lock_id(using)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock_id])
            if not cursor.fetchone()[0]:
                raise LockBusy
        try:
            yield
        finally:
            _release(connection, "SELECT pg_advisory_unlock(%s)", [lock_id])
    elif vendor == "mysql":
        name = f"{LOCK_NAME}-{_lock_id(using)}"
        with connection.cursor() as cursor:
            cursor.execute("SELECT GET_LOCK(%s, 0)", [name])
            if cursor.fetchone()[0] != 1:
                raise LockBusy
        try:
            yield
        finally:
            _release(connection, "SELECT RELEASE_LOCK(%s)", [name])
    else:
        with _file_lock(_sqlite_lock_path(using)):
            yield


def _release(connection, sql: str, params: list) -> None:
    """Let a session's lock go, even from inside a caller's transaction that an error has
    spoilt: Django refuses queries there, so this goes through the driver's own connection;
    where the database refuses too (PostgreSQL's aborted transaction), the connection is
    closed, and the lock goes with its session (the transaction could only roll back)."""
    if connection.connection is None:  # gone, and its locks with it
        return
    try:
        with connection.connection.cursor() as cursor:
            cursor.execute(sql, params)
    except connection.Database.Error:
        connection.close()


def _sqlite_lock_path(using: str) -> Path:
    name = str(connections[using].settings_dict["NAME"])
    if connections[using].is_in_memory_db():
        # Each process has its own in-memory database (a test run's): so it has its own lock.
        name = f"{name} in process {os.getpid()}"
    if name.startswith((":memory:", "file:")):
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"{LOCK_NAME}-{digest}.lock"
    return Path(f"{name}.sync-lock")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LockBusy from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def write_transaction(using: str) -> Iterator[None]:
    """``transaction.atomic()`` for a transaction that writes; on SQLite it takes the write
    lock at once (``BEGIN IMMEDIATE``).

    In SQLite's WAL mode a transaction that reads before it writes fails at its first write
    ("database is locked", at once) if another connection committed after its first read.
    Holding the write lock from the start, it waits for the other writer instead (up to the
    busy timeout), and nobody commits under it.
    """
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic(using=using):
            yield
        return
    connection.ensure_connection()  # connecting sets transaction_mode from the settings
    mode, connection.transaction_mode = connection.transaction_mode, "IMMEDIATE"
    try:
        with transaction.atomic(using=using):
            connection.transaction_mode = mode
            yield
    finally:
        connection.transaction_mode = mode
