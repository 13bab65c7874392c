"""Beat schedules: the defaults ``syncschedule`` installs, and what a scheduled export does.

Schedules are rows of django-celery-beat (``PeriodicTask``) that people edit in the admin;
beat's DatabaseScheduler reads them. The defaults below are installed by ``syncschedule``,
never by ``CELERY_BEAT_SCHEDULE`` (beat writes that over the rows on every start).

*Edited* means: the row differs from the default definition in a field a person sets (task,
arguments, schedule, enabled, description, expiry, routing…), not in what beat itself writes
(last run, run count). ``syncschedule`` creates a missing default, leaves one that is as
defined or edited, and overwrites an edited one only with ``reset``. A deleted default comes
back at the next ``syncschedule``: to stop one, disable it.

A scheduled export (``run_scheduled_export``) creates its export job with
``started_by="schedule <name>"`` and executes it in the calling process (the worker). If the
previous run of the same schedule is still going, it skips and logs why: runs do not pile up.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from sync.conf import sync_settings
from sync.errors import SyncError
from sync.jobs.dispatch import execute_queued
from sync.jobs.exports import start_export
from sync.jobs.lifecycle import database_of, is_stale
from sync.models import BackupRecord, Job

logger = logging.getLogger(__name__)

EXPORT_TASK = "sync.scheduled_export"
ROTATE_TASK = "sync.rotate"
WEBHOOK_RETRY_TASK = "sync.deliver_due_webhooks"
# What a scheduled export's kwargs may hold besides ``schedule``: start_export's options.
EXPORT_OPTIONS = (
    "tables",
    "exclude",
    "with_dependencies",
    "kind",
    "compression",
    "level",
    "output_dir",
    "include_secrets",
    "using",
)


class ScheduleError(SyncError):
    """A schedule that cannot be run or installed as asked (an unknown option, name…)."""


# Options of a row a default leaves unset: a person who sets one has edited the schedule.
UNSET_OPTIONS: dict[str, Any] = {
    "one_off": False,
    "start_time": None,
    "expires": None,
    "expire_seconds": None,
    "queue": None,
    "exchange": None,
    "routing_key": None,
    "priority": None,
    "headers": {},
}


@dataclass(frozen=True)
class Crontab:
    """When a default runs, in the site's time zone (``TIME_ZONE``, which is Celery's)."""

    minute: str
    hour: str
    day_of_week: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"

    def fields(self) -> dict[str, str]:
        return {
            "minute": self.minute,
            "hour": self.hour,
            "day_of_week": self.day_of_week,
            "day_of_month": self.day_of_month,
            "month_of_year": self.month_of_year,
            "timezone": timezone.get_default_timezone_name(),
        }


@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    crontab: Crontab
    description: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def definition(self) -> dict[str, Any]:
        """What a row holds when it is this default, as ``definition_of`` reads a row."""
        return {
            "task": self.task,
            "schedule": ("crontab", *self.crontab.fields().values()),
            "args": [],
            "kwargs": dict(self.kwargs),
            "enabled": True,
            "description": self.description,
        } | UNSET_OPTIONS


def export_at_half_past_three(name: str, days: str, kind: str, which: str) -> DefaultSchedule:
    """A default export of the default apps at 03:30 on ``days`` (crontab day_of_week)."""
    return DefaultSchedule(
        name=name,
        task=EXPORT_TASK,
        crontab=Crontab(minute="30", hour="3", day_of_week=days),
        kwargs={"schedule": name, "kind": kind, "compression": "gz"},
        description=f"Export of the default apps, {which} (syncschedule default).",
    )


# Times keep clear of 01:00 to 03:00, where a daylight saving change skips or repeats an hour
# in most time zones that have one. The nightly export takes the days the weekly one leaves:
# one export a night. It is full until incremental exports exist, then becomes incremental.
DEFAULT_SCHEDULES: tuple[DefaultSchedule, ...] = (
    export_at_half_past_three("sync: nightly export", "1-6", "full", "Monday to Saturday"),
    export_at_half_past_three("sync: weekly full export", "0", "full", "full, on Sundays"),
    DefaultSchedule(
        name="sync: daily rotation",
        task=ROTATE_TASK,
        crontab=Crontab(minute="30", hour="5"),
        description="Removes archives the retention rules no longer keep (syncschedule default).",
    ),
    DefaultSchedule(
        name="sync: webhook retries",
        task=WEBHOOK_RETRY_TASK,
        crontab=Crontab(minute="*", hour="*"),
        description="Sends the webhook deliveries whose next attempt is due, every minute "
        "(syncschedule default; docs/webhooks.md).",
    ),
)


# -- reading rows ------------------------------------------------------------------------------


def definition_of(row: PeriodicTask) -> dict[str, Any]:
    """The fields of ``row`` a person sets, comparable with ``DefaultSchedule.definition()``:
    JSON text parsed (kept as text if it does not parse), the schedule as a tuple."""
    return {
        "task": row.task,
        "schedule": schedule_of(row),
        "args": parsed(row.args, []),
        "kwargs": parsed(row.kwargs, {}),
        "enabled": row.enabled,
        "description": row.description,
        "one_off": row.one_off,
        "start_time": row.start_time,
        "expires": row.expires,
        "expire_seconds": row.expire_seconds,
        "queue": row.queue or None,
        "exchange": row.exchange or None,
        "routing_key": row.routing_key or None,
        "priority": row.priority,
        "headers": parsed(row.headers, {}),
    }


def schedule_of(row: PeriodicTask) -> tuple:
    if row.crontab_id is None:
        return ("other", str(row.scheduler))
    crontab = row.crontab
    return (
        "crontab",
        crontab.minute,
        crontab.hour,
        crontab.day_of_week,
        crontab.day_of_month,
        crontab.month_of_year,
        str(crontab.timezone),
    )


def parsed(text: str | None, empty: Any) -> Any:
    if not text:
        return empty
    try:
        return json.loads(text)
    except ValueError:
        return text


def edited_fields(row: PeriodicTask, default: DefaultSchedule) -> list[str]:
    """The fields where ``row`` differs from ``default``; empty when it is as defined."""
    wanted, found = default.definition(), definition_of(row)
    return [name for name in wanted if found[name] != wanted[name]]


# -- installing the defaults -------------------------------------------------------------------

Action = Literal["created", "unchanged", "kept", "restored"]


@dataclass(frozen=True)
class ScheduleOutcome:
    """What ``install_schedules`` did (or, in a dry run, would do) with one default."""

    name: str
    action: Action
    edited: tuple[str, ...] = ()  # the fields a person changed ("kept", "restored")


def chosen_defaults(names: Iterable[str] = ()) -> list[DefaultSchedule]:
    """The defaults named (all of them if none is); ScheduleError for an unknown name."""
    wanted = list(names)
    known = {default.name: default for default in DEFAULT_SCHEDULES}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ScheduleError(
            f"No default schedule is named {unknown[0]!r}; the defaults are: "
            + ", ".join(repr(name) for name in known)
            + "."
        )
    return [known[name] for name in wanted] if wanted else list(DEFAULT_SCHEDULES)


def install_schedules(
    names: Iterable[str] = (), reset: bool = False, dry_run: bool = False
) -> list[ScheduleOutcome]:
    """Create the missing defaults; with ``reset``, also put back the edited ones. A default
    as defined is left untouched (its last run is kept), an edited one too unless ``reset``."""
    try:
        return apply_defaults(chosen_defaults(names), reset, dry_run)
    except IntegrityError:  # another process (a second web container) created one meanwhile
        return apply_defaults(chosen_defaults(names), reset, dry_run)


def apply_defaults(
    defaults: list[DefaultSchedule], reset: bool, dry_run: bool
) -> list[ScheduleOutcome]:
    outcomes = []
    with transaction.atomic():
        for default in defaults:
            row = PeriodicTask.objects.filter(name=default.name).select_related("crontab").first()
            if row is None:
                action: Action = "created"
                edited: list[str] = []
            else:
                edited = edited_fields(row, default)
                action = "unchanged" if not edited else "restored" if reset else "kept"
            if action in ("created", "restored") and not dry_run:
                write_default(default, row)
            outcomes.append(ScheduleOutcome(default.name, action, tuple(edited)))
    return outcomes


def write_default(default: DefaultSchedule, row: PeriodicTask | None) -> PeriodicTask:
    """Save ``default`` into ``row`` (a new one if None). One ``save()`` per row: its signal
    tells a running beat that the schedule changed (a bulk ``update()`` would not)."""
    row = row or PeriodicTask(name=default.name)
    crontab_fields = default.crontab.fields()
    crontab = CrontabSchedule.objects.filter(**crontab_fields).order_by("pk").first()
    row.crontab = crontab or CrontabSchedule.objects.create(**crontab_fields)
    row.interval = row.solar = row.clocked = None
    row.task = default.task
    row.args = "[]"
    row.kwargs = json.dumps(dict(default.kwargs))
    row.enabled = True
    row.description = default.description
    for name, value in UNSET_OPTIONS.items():
        setattr(row, name, json.dumps(value) if name == "headers" else value)
    row.save()
    return row


# -- listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleState:
    """A schedule as ``syncschedule --list`` shows it: a default, or one a person added that
    runs a sync task."""

    name: str
    task: str
    when: str  # the schedule, as django-celery-beat writes it ("" when missing)
    enabled: bool
    kwargs: str
    state: Literal["default", "edited", "missing", "added"]
    edited: tuple[str, ...] = ()
    last_run_at: datetime | None = None


def schedule_states() -> list[ScheduleState]:
    """Every default (as defined, edited or missing), then the other schedules of sync tasks."""
    defaults = [default.name for default in DEFAULT_SCHEDULES]
    found = PeriodicTask.objects.filter(Q(task__startswith="sync.") | Q(name__in=defaults))
    rows = {row.name: row for row in found.select_related("crontab").order_by("name")}
    states = []
    for default in DEFAULT_SCHEDULES:
        row = rows.pop(default.name, None)
        if row is None:
            kwargs = json.dumps(dict(default.kwargs))
            states.append(ScheduleState(default.name, default.task, "", False, kwargs, "missing"))
            continue
        edited = tuple(edited_fields(row, default))
        states.append(state_of(row, "edited" if edited else "default", edited))
    states += [state_of(row, "added") for row in rows.values()]
    return states


def state_of(row: PeriodicTask, state: str, edited: tuple[str, ...] = ()) -> ScheduleState:
    return ScheduleState(
        name=row.name,
        task=row.task,
        when=row.crontab.human_readable if row.crontab_id else str(row.scheduler or ""),
        enabled=row.enabled,
        kwargs=row.kwargs,
        state=state,  # type: ignore[arg-type]
        edited=edited,
        last_run_at=row.last_run_at,
    )


# -- a scheduled export ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledRun:
    """What one scheduled export did: ran ``job``, or skipped (``skipped`` says why, ``job``
    is then the previous run still going)."""

    schedule: str
    job: BackupRecord | None
    skipped: str = ""

    def as_dict(self) -> dict[str, Any]:
        """For the task's result: primitives only."""
        job = self.job
        return {
            "schedule": self.schedule,
            "job": job.label if job else None,
            "status": "skipped" if self.skipped else (job.status if job else None),
            "skipped": self.skipped,
            "error": "" if self.skipped or job is None else job.error,
        }


def started_by(schedule: str) -> str:
    return f"schedule {schedule}"


def previous_run_going(schedule: str, using: str = "default") -> BackupRecord | None:
    """The export of ``schedule`` still going: running with a fresh heartbeat, or queued a
    moment ago (about to be claimed by the run that created it). A queued job older than the
    stale delay was left by a run that died before claiming it, and holds nothing up."""
    recent = time.time() - sync_settings.SYNC_JOB_STALE_AFTER
    jobs = BackupRecord.objects.using(using).filter(
        started_by=started_by(schedule), status__in=[Job.Status.RUNNING, Job.Status.QUEUED]
    )
    for job in jobs.order_by("-created_at"):
        if job.status == Job.Status.QUEUED and job.created_at.timestamp() >= recent:
            return job
        if job.status == Job.Status.RUNNING and not is_stale(job):
            return job
    return None


def export_options(schedule: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The start_export options of a schedule's kwargs (a name list may be written as one
    comma-separated string); ScheduleError names an option it does not know (a typo made in
    the admin's JSON)."""
    unknown = sorted(set(options) - set(EXPORT_OPTIONS))
    if unknown:
        raise ScheduleError(
            f"Schedule {schedule!r}: unknown export option {unknown[0]!r} in its kwargs; "
            f"the options are schedule, {', '.join(EXPORT_OPTIONS)}."
        )
    chosen = dict(options)
    for name in ("tables", "exclude"):  # "content.Tag, content.Event" as a list of names
        if isinstance(chosen.get(name), str):
            chosen[name] = [part.strip() for part in chosen[name].split(",") if part.strip()]
    return chosen


def run_scheduled_export(schedule: str, options: Mapping[str, Any]) -> ScheduledRun:
    """Run one export of ``schedule`` with ``options`` (start_export's), here and now — or
    skip it when the previous run of the schedule is still going. A failed export is recorded
    on its job and returned (``execute_queued``); bad options raise SyncError before any job
    exists."""
    chosen = export_options(schedule, options)
    going = previous_run_going(schedule, chosen.get("using", "default"))
    if going is not None:
        reason = (
            f"the previous run, {going.label} (started {going.created_at:%Y-%m-%d %H:%M:%S} "
            f"UTC), is still {going.status}"
        )
        logger.warning("Scheduled export %r skipped: %s.", schedule, reason)
        return ScheduledRun(schedule, going, reason)
    backup = start_export(**chosen, started_by=started_by(schedule))
    execute_queued("export", backup.pk, database_of(backup))  # how it ended: on its row
    backup.refresh_from_db()
    return ScheduledRun(schedule, backup)
