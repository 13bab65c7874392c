"""System checks for the app's settings (``manage.py check``); defaults in ``sync.conf``."""

from __future__ import annotations

import os

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from sync.conf import project_value, sync_settings
from sync.generic import setting_problems
from sync.jobs.channel import CACHE_ALIAS
from sync.jobs.reporter import HEARTBEAT_SECONDS

PROCESS_LOCAL_CACHES = ("LocMemCache", "DummyCache")


@register()
def check_generic_relations(app_configs, **kwargs) -> list[Error]:
    return [
        Error(f"SYNC_GENERIC_RELATIONS: {problem}", id="sync.E001")
        for problem in setting_problems()
    ]


@register(Tags.caches)
def check_job_settings(app_configs, **kwargs) -> list:
    problems = []
    backend = settings.CACHES.get(CACHE_ALIAS, {}).get("BACKEND", "")
    if not backend:
        problems.append(
            Error(
                f'CACHES has no "{CACHE_ALIAS}" cache: jobs keep progress, heartbeats and cancel '
                "requests there.",
                hint="Set SYNC_CACHE_URL (filecache:///path or redis://host:6379/1).",
                id="sync.E010",
            )
        )
    elif backend.endswith(PROCESS_LOCAL_CACHES):
        problems.append(
            Warning(
                f'The "{CACHE_ALIAS}" cache ({backend.rsplit(".", 1)[-1]}) is not shared between '
                "processes: no other process sees a job's progress or can cancel it, and every "
                "job of another process looks stale.",
                hint="Use a file cache (one host) or Redis (several hosts) for SYNC_CACHE_URL.",
                id="sync.W010",
            )
        )
    stale_after = sync_settings.SYNC_JOB_STALE_AFTER
    if not isinstance(stale_after, int | float) or stale_after < 3 * HEARTBEAT_SECONDS:
        problems.append(
            Error(
                f"SYNC_JOB_STALE_AFTER must be a number of seconds of at least "
                f"{3 * HEARTBEAT_SECONDS:g} (three heartbeats), not {stale_after!r}.",
                id="sync.E011",
            )
        )
    return problems


def positive_int(value) -> bool:
    return type(value) is int and value > 0


@register()
def check_read_limits(app_configs, **kwargs) -> list[Error]:
    """The bounds of what a reader takes from an archive (see sync.archive.ReadLimits)."""
    return [
        Error(f"{name} must be a positive number of bytes, not {value!r}.", id="sync.E002")
        for name in ("SYNC_MAX_MEMBER_SIZE", "SYNC_MAX_LINE_SIZE")
        if not positive_int(value := getattr(sync_settings, name))
    ]


@register()
def check_key_map_limit(app_configs, **kwargs) -> list[Error]:
    value = sync_settings.SYNC_KEY_MAP_LIMIT
    if positive_int(value):
        return []
    return [
        Error(
            f"SYNC_KEY_MAP_LIMIT must be a positive number of rows, not {value!r}.", id="sync.E003"
        )
    ]


def list_of_strings(value) -> bool:
    return isinstance(value, list | tuple) and all(type(item) is str for item in value)


@register()
def check_sensitive_fields(app_configs, **kwargs) -> list[Error]:
    value = sync_settings.SYNC_SENSITIVE_FIELDS
    if list_of_strings(value):
        return []
    return [
        Error(
            f'SYNC_SENSITIVE_FIELDS must be a list of patterns ("app_label.Model.field", '
            f"fnmatch), not {value!r}.",
            id="sync.E004",
        )
    ]


@register()
def check_default_apps(app_configs, **kwargs) -> list[Error]:
    value = sync_settings.SYNC_DEFAULT_APPS
    if not list_of_strings(value):
        return [
            Error(f"SYNC_DEFAULT_APPS must be a list of app labels, not {value!r}.", id="sync.E005")
        ]
    installed = {config.label for config in apps.get_app_configs()}
    return [
        Error(f"SYNC_DEFAULT_APPS: {label!r} is not the label of an installed app.", id="sync.E005")
        for label in value
        if label not in installed
    ]


@register()
def check_backup_dir(app_configs, **kwargs) -> list[Error]:
    value = project_value("BACKUP_DIR")
    if value is not None and not isinstance(value, str | os.PathLike):
        return [Error(f"BACKUP_DIR must be a path, not {value!r}.", id="sync.E006")]
    path = sync_settings.BACKUP_DIR
    if path.exists() and not path.is_dir():
        return [Error(f"BACKUP_DIR {str(path)!r} is not a directory.", id="sync.E006")]
    return []


@register()
def check_keys(app_configs, **kwargs) -> list[Error]:
    value = sync_settings.SYNC_KEYS
    if isinstance(value, dict) and all(
        type(label) is str and list_of_strings(fields) and fields for label, fields in value.items()
    ):
        return []
    return [
        Error(
            f"SYNC_KEYS must map model labels to lists of field names, not {value!r}.",
            id="sync.E007",
        )
    ]
