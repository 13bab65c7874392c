"""The sync app's settings, with their defaults in one place.

A project sets any of them in its settings module; what it leaves out has the default
below, so the app works in a project that sets none. Read them here, never from
``django.conf.settings`` directly: ``sync_settings.SYNC_KEY_MAP_LIMIT``. Each read looks at
the settings again, so ``override_settings`` works. ``manage.py check`` tells a bad value
(``sync.checks``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

GiB = 1024**3
MiB = 1024**2

DEFAULTS: dict[str, Any] = {
    # Where syncexport writes archives; None: ``backups`` beside the project (BASE_DIR).
    "BACKUP_DIR": None,
    # Apps whose models syncexport takes when no --tables are given.
    "SYNC_DEFAULT_APPS": [],
    # Fields left out of archives unless --include-secrets ("app_label.Model.field", fnmatch).
    "SYNC_SENSITIVE_FIELDS": ["*.password"],
    # Generic references no GenericForeignKey declares: (model label, content type field, id
    # field); their ids are written as the referenced record's sync key.
    "SYNC_GENERIC_RELATIONS": [],
    # Sync keys of models that have no xmlid field: model label → key field names.
    "SYNC_KEYS": {},
    # Largest archive member a reader takes, in bytes (a guard against bombs).
    "SYNC_MAX_MEMBER_SIZE": 20 * GiB,
    # Longest record line a reader takes into memory and an export writes, in bytes.
    "SYNC_MAX_LINE_SIZE": 64 * MiB,
    # Import: a target table with more rows has its key → id map read a chunk at a time.
    "SYNC_KEY_MAP_LIMIT": 100_000,
    # A running job whose heartbeat is older than this, in seconds, is stale (sync.jobs).
    "SYNC_JOB_STALE_AFTER": 60,
    # Where import jobs keep their plans (docs/plans.md); None: ``plans`` in BACKUP_DIR.
    "SYNC_PLAN_DIR": None,
    # Largest archive the admin's Upload archive page takes, in bytes.
    "SYNC_UPLOAD_MAX_SIZE": 2 * GiB,
}


class SyncSettings:
    """The sync settings as attributes: the project's value, else the default."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"{name} is not a setting of the sync app")
        value = project_value(name)
        if name == "BACKUP_DIR":
            return Path(value) if value is not None else default_backup_dir()
        if name == "SYNC_PLAN_DIR":
            return Path(value) if value is not None else self.BACKUP_DIR / "plans"
        return value


def project_value(name: str) -> Any:
    """The setting as the project gives it, else its default; as is (``sync.checks``)."""
    return getattr(settings, name, DEFAULTS[name])


def default_backup_dir() -> Path:
    return Path(getattr(settings, "BASE_DIR", Path.cwd())) / "backups"


sync_settings = SyncSettings()
