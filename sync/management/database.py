"""The ``--database`` option of the sync commands, checked the same way by each."""

from django.core.management.base import CommandError

from sync.databases import DatabaseUnavailable, check_database


def usable_database(using: str) -> str:
    """``using``, if it names a reachable, migrated database; else a one-line CommandError
    saying what to do."""
    try:
        check_database(using)
    except DatabaseUnavailable as exc:
        raise CommandError(str(exc)) from exc
    return using
