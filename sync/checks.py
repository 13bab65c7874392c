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
    # No "sync" cache at all is fine: jobs then use a file cache in BACKUP_DIR
    # (sync.jobs.channel.fallback_cache). (sync.E010, which refused that, is retired.)
    backend = settings.CACHES.get(CACHE_ALIAS, {}).get("BACKEND", "")
    if backend.endswith(PROCESS_LOCAL_CACHES):
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
        error
        for name in ("SYNC_MAX_MEMBER_SIZE", "SYNC_MAX_LINE_SIZE")
        for error in unless(positive_int, name, "a positive number of bytes", "sync.E002")
    ]


def list_of_strings(value) -> bool:
    return isinstance(value, list | tuple) and all(type(item) is str for item in value)


def key_overrides(value) -> bool:
    return isinstance(value, dict) and all(
        type(label) is str and list_of_strings(fields) and fields for label, fields in value.items()
    )


def unless(valid, name: str, expected: str, check_id: str) -> list[Error]:
    """An error naming setting ``name`` and its value unless ``valid(value)``."""
    value = getattr(sync_settings, name)
    return (
        [] if valid(value) else [Error(f"{name} must be {expected}, not {value!r}.", id=check_id)]
    )


@register()
def check_value_types(app_configs, **kwargs) -> list[Error]:
    return [
        *unless(positive_int, "SYNC_KEY_MAP_LIMIT", "a positive number of rows", "sync.E003"),
        *unless(
            list_of_strings,
            "SYNC_SENSITIVE_FIELDS",
            'a list of patterns ("app_label.Model.field", fnmatch)',
            "sync.E004",
        ),
        *unless(
            key_overrides, "SYNC_KEYS", "a map of model labels to lists of field names", "sync.E007"
        ),
        *unless(positive_int, "SYNC_UPLOAD_MAX_SIZE", "a positive number of bytes", "sync.E040"),
        *unless(non_negative_number, "SYNC_PLAN_KEEP_DAYS", "a number of days", "sync.E012"),
        *unless(is_bool, "SYNC_SAME_STAMP_CHECK", "True or False", "sync.E013"),
    ]


def non_negative_number(value) -> bool:
    return type(value) in (int, float) and value >= 0


def is_bool(value) -> bool:
    return type(value) is bool


@register()
def check_secret_keys(app_configs, **kwargs) -> list[Error]:
    """A sync key named in SYNC_KEYS may not be a secret (``sync.schema.secret_key_fields``)."""
    from sync.schema import secret_key_fields

    if check_value_types(app_configs):
        return []  # sync.E004 / sync.E007 say what is wrong first
    problems = []
    for label in sync_settings.SYNC_KEYS:
        try:
            secret = secret_key_fields(apps.get_model(label))
        except (LookupError, ValueError):
            continue
        if secret:
            problems.append(
                Error(
                    f"SYNC_KEYS: the sync key of {label} includes {secret[0]!r}, which "
                    "SYNC_SENSITIVE_FIELDS names; a key names its record in every archive, plan "
                    "and message, so exports and imports of it are refused.",
                    hint="Key the model by a field that is no secret, or take the field out of "
                    "SYNC_SENSITIVE_FIELDS.",
                    id="sync.E065",
                )
            )
    return problems


@register()
def check_default_apps(app_configs, **kwargs) -> list[Error]:
    wrong = unless(list_of_strings, "SYNC_DEFAULT_APPS", "a list of app labels", "sync.E005")
    if wrong:
        return wrong
    installed = {config.label for config in apps.get_app_configs()}
    return [
        Error(f"SYNC_DEFAULT_APPS: {label!r} is not the label of an installed app.", id="sync.E005")
        for label in sync_settings.SYNC_DEFAULT_APPS
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


def whole_number(value) -> bool:
    return type(value) is int and value >= 0


def positive_or_none(value) -> bool:
    return value is None or positive_int(value)


@register()
def check_rotation(app_configs, **kwargs) -> list[Error]:
    """The rotation policy's settings (sync.rotation.Policy)."""
    return [
        *unless(positive_or_none, "BACKUP_KEEP_COUNT", "None or a positive number", "sync.E020"),
        *unless(
            positive_or_none,
            "BACKUP_MAX_AGE_DAYS",
            "None or a positive number of days",
            "sync.E020",
        ),
        *(
            error
            for name in ("SYNC_KEEP_DAILY", "SYNC_KEEP_WEEKLY", "SYNC_KEEP_MONTHLY")
            for error in unless(whole_number, name, "a whole number of 0 or more", "sync.E020")
        ),
    ]


@register()
def check_task_time_limits(app_configs, **kwargs) -> list[Error]:
    """The soft limit must come first: it is what lets a job record its end and roll back."""
    wrong = [
        error
        for name in ("SYNC_TASK_SOFT_TIME_LIMIT", "SYNC_TASK_TIME_LIMIT")
        for error in unless(positive_int, name, "a positive number of seconds", "sync.E021")
    ]
    if wrong:
        return wrong
    soft, hard = sync_settings.SYNC_TASK_SOFT_TIME_LIMIT, sync_settings.SYNC_TASK_TIME_LIMIT
    if soft >= hard:
        return [
            Error(
                f"SYNC_TASK_SOFT_TIME_LIMIT ({soft} s) must be below SYNC_TASK_TIME_LIMIT "
                f"({hard} s): at the hard limit the worker process is killed, and the job cannot "
                "record its end.",
                id="sync.E021",
            )
        ]
    return []


@register()
def check_webhooks(app_configs, **kwargs) -> list:
    """The webhook URLs, the signing secret, and the delivery knobs (``sync.webhooks``)."""
    from sync.webhooks import secret_problem, url_problem

    problems: list = []
    any_url = False
    for name in WEBHOOK_URL_SETTINGS:
        urls = getattr(sync_settings, name)
        if not list_of_strings(urls):
            problems.append(
                Error(f"{name} must be a URL or a list of URLs, not {urls!r}.", id="sync.E030")
            )
            continue
        any_url = any_url or bool(urls)
        problems += [
            Error(f"{name}: {problem}", id="sync.E030")
            for problem in map(url_problem, urls)
            if problem
        ]
    problem = secret_problem(sync_settings.SYNC_WEBHOOK_SECRET, required=any_url)
    if problem:
        problems.append(
            Error(
                f"SYNC_WEBHOOK_SECRET {problem}",
                hint='Make one with: python -c "import base64, secrets; '
                "print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\"",
                id="sync.E031",
            )
        )
    for name in ("SYNC_WEBHOOK_CONNECT_TIMEOUT", "SYNC_WEBHOOK_READ_TIMEOUT"):
        problems += unless(positive_number, name, "a positive number of seconds", "sync.E032")
    problems += unless(positive_int, "SYNC_WEBHOOK_MAX_ATTEMPTS", "a positive integer", "sync.E032")
    return problems


WEBHOOK_URL_SETTINGS = ("BACKUP_WEBHOOK_URL", "IMPORT_WEBHOOK_URL")


def positive_number(value) -> bool:
    return type(value) in (int, float) and value > 0
