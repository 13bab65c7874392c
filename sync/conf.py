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
    # Plans of ended dry runs older than this many days are removed when a dry run starts
    # (docs/plans.md says which are kept whatever their age).
    "SYNC_PLAN_KEEP_DAYS": 7,
    # Update mode: compare the content of archive records whose updated_at equals the
    # target's, reporting other content under the same stamp (skip, same-timestamp-different-
    # content). Off by default: it reads every such record, most of an update (docs/plans.md).
    "SYNC_SAME_STAMP_CHECK": False,
    # Rotation (docs/rotation.md), the defaults of syncrotate and of the daily task. None or 0
    # leaves a rule out; with no rule at all, rotation keeps every backup.
    # Keep the N newest backups (keep-last).
    "BACKUP_KEEP_COUNT": None,
    # Keep every backup at most D days old; older ones only if another rule keeps them.
    "BACKUP_MAX_AGE_DAYS": None,
    # Keep the newest backup of each of the last N days / ISO weeks / months that have backups.
    "SYNC_KEEP_DAILY": 0,
    "SYNC_KEEP_WEEKLY": 0,
    "SYNC_KEEP_MONTHLY": 0,
    # Celery tasks (docs/celery.md), in seconds: at the soft limit a task's job stops, failed
    # and rolled back; at the hard limit its worker process is killed (the job turns stale).
    "SYNC_TASK_SOFT_TIME_LIMIT": 6 * 3600 - 300,
    "SYNC_TASK_TIME_LIMIT": 6 * 3600,
    # Webhooks (docs/webhooks.md): URLs that receive a signed POST after every export (and
    # rotation) / import; a list, or one URL as a string.
    "BACKUP_WEBHOOK_URL": [],
    "IMPORT_WEBHOOK_URL": [],
    # The Standard Webhooks signing secret, "whsec_" + base64; required when a URL is set.
    "SYNC_WEBHOOK_SECRET": "",
    # Seconds to wait for a receiver's connection, and then for each read of its answer.
    "SYNC_WEBHOOK_CONNECT_TIMEOUT": 5,
    "SYNC_WEBHOOK_READ_TIMEOUT": 15,
    # Attempts per delivery (the first one included) before it is given up as failed.
    "SYNC_WEBHOOK_MAX_ATTEMPTS": 8,
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
        if name in ("BACKUP_WEBHOOK_URL", "IMPORT_WEBHOOK_URL") and isinstance(value, str):
            return [value] if value else []
        return value


def project_value(name: str) -> Any:
    """The setting as the project gives it, else its default; as is (``sync.checks``)."""
    return getattr(settings, name, DEFAULTS[name])


def default_backup_dir() -> Path:
    return Path(getattr(settings, "BASE_DIR", Path.cwd())) / "backups"


sync_settings = SyncSettings()
