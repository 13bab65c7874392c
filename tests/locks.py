"""Holding the import lock as a second process would, for tests of refusals."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager

import MySQLdb
import psycopg
from django.db import connection, connections

from sync.locking import LOCK_NAME, _lock_id, _sqlite_lock_path


@contextmanager
def lock_held_elsewhere():
    """Take the default database's import lock the way a second process would."""
    if connection.vendor == "postgresql":
        params = connection.get_connection_params()
        with psycopg.connect(**params, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", [_lock_id("default")])
            yield
    else:
        with open(_sqlite_lock_path("default"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield


def free_elsewhere(alias: str) -> bool:
    """Whether another connection (as a second process would) can take ``alias``'s import
    lock now; it lets it go again at once."""
    vendor = connections[alias].vendor
    params = connections[alias].get_connection_params()
    if vendor == "postgresql":
        with psycopg.connect(**params, autocommit=True) as other:
            taken = other.execute("SELECT pg_try_advisory_lock(%s)", [_lock_id(alias)]).fetchone()
            return taken[0]
    if vendor == "mysql":
        other = MySQLdb.connect(**params)
        try:
            cursor = other.cursor()
            cursor.execute("SELECT GET_LOCK(%s, 0)", [f"{LOCK_NAME}-{_lock_id(alias)}"])
            return cursor.fetchone()[0] == 1
        finally:
            other.close()
    with open(_sqlite_lock_path(alias), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
