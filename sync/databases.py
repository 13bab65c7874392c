"""Whether a database can be worked on: its alias configured, the database reachable, its
schema migrated. Checked before a command touches it, so the answer is one line saying what to
do, not a driver's traceback halfway through."""

from __future__ import annotations

from pathlib import Path

from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

from sync.errors import SyncError


class DatabaseUnavailable(SyncError):
    """A database that cannot be used as it is; the message says why and what to do."""


def check_database(using: str) -> None:
    """Raise DatabaseUnavailable unless ``using`` names a reachable, fully migrated database.

    Nothing is created or written: a SQLite file that does not exist is refused before
    connecting (connecting would create it).
    """
    if using not in connections:
        raise DatabaseUnavailable(
            f"Unknown database alias {using!r}: use one of {', '.join(connections)} "
            f"(SYNC_EXTRA_DATABASES adds more)."
        )
    connection = connections[using]
    migrate = f"run `python manage.py migrate --database {using}` first"
    name = str(connection.settings_dict["NAME"])
    if missing_sqlite_file(connection):
        raise DatabaseUnavailable(
            f"Database {using!r}: the SQLite file {name} does not exist; {migrate}."
        )
    try:
        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatabaseUnavailable(
            f"Cannot use database {using!r} ({name}): {reason}. Check its settings "
            f"(DATABASE_URL, SYNC_EXTRA_DATABASES); a new database needs creating, then {migrate}."
        ) from exc
    if pending:
        first, _ = pending[0]
        raise DatabaseUnavailable(
            f"Database {using!r} ({name}) is not migrated: {len(pending)} migrations are not "
            f"applied (the first: {first.app_label}.{first.name}); {migrate}."
        )


def missing_sqlite_file(connection) -> bool:
    name = str(connection.settings_dict["NAME"])
    if connection.vendor != "sqlite" or connection.is_in_memory_db() or name.startswith("file:"):
        return False
    return not Path(name).exists()
