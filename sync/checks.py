"""System checks for the app's settings (``manage.py check``)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

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
    stale_after = getattr(settings, "SYNC_JOB_STALE_AFTER", None)
    if not isinstance(stale_after, int | float) or stale_after < 3 * HEARTBEAT_SECONDS:
        problems.append(
            Error(
                f"SYNC_JOB_STALE_AFTER must be a number of seconds of at least "
                f"{3 * HEARTBEAT_SECONDS:g} (three heartbeats), not {stale_after!r}.",
                id="sync.E011",
            )
        )
    return problems


@register()
def check_read_limits(app_configs, **kwargs) -> list[Error]:
    """The bounds of what a reader takes from an archive (see sync.archive.ReadLimits)."""
    return [
        Error(f"{name} must be a positive number of bytes, not {value!r}.", id="sync.E002")
        for name in ("SYNC_MAX_MEMBER_SIZE", "SYNC_MAX_LINE_SIZE")
        if not (type(value := getattr(settings, name)) is int and value > 0)
    ]
