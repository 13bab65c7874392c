"""Holding the import lock as a second process would, for tests of refusals."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager

import psycopg
from django.db import connection

from sync.locking import _lock_id, _sqlite_lock_path


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
