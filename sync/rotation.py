"""Rotation: which backups to keep and which archives to delete (docs/rotation.md).

Two stages. ``decide`` is the policy, a pure function: backups (id, time, status, what they
depend on) in, one ``Decision`` per backup out, with the rules that decided it. ``plan_rotation``
reads the records and the archive storage, refuses when it cannot see, and asks ``decide``;
``apply_rotation`` deletes the archives of a plan, marks their records deleted (with when and
why) and sends ``sync.signals.rotation_finished``. ``rotate`` does both, as the task does.

The keep rules follow restic's ``forget``: keep-last N keeps the N newest; keep-daily N keeps
the newest backup of each of the last N days that have backups (weekly: ISO weeks, Monday to
Sunday; monthly: calendar months; days, weeks and months in the project's ``TIME_ZONE``); a
rule with periods left after the oldest backup keeps the oldest too; rules are ORed. Max-age D
keeps what is at most D days old; older backups go unless another rule keeps them. Whatever
the rules say, the newest successful backup stays, and so does every backup a kept one depends
on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from django.core.files.storage import FileSystemStorage, Storage
from django.db import transaction
from django.utils import timezone

from sync.archive import remove_leftovers
from sync.conf import sync_settings
from sync.errors import SyncError
from sync.jobs.lifecycle import mark_stale_jobs
from sync.models import BackupRecord, Job
from sync.signals import rotation_finished
from sync.storage import StorageError, archive_storage, name_in_storage, stored_archives


class RotationRefused(SyncError):
    """Rotation cannot see what it would delete: nothing was deleted."""


class RotationFailed(SyncError):
    """Deleting an archive failed part way; the records say which were deleted before."""


# -- the policy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How many backups each rule keeps; 0 (or None for max-age) leaves the rule out."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    max_age_days: int | None = None

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                option = name.replace("_", "-")
                raise SyncError(f"--{option} must be a whole number of 0 or more, not {value!r}.")
        if self.max_age_days is not None and (
            type(self.max_age_days) is not int or self.max_age_days < 1
        ):
            raise SyncError(
                f"--max-age-days must be a whole number of days of 1 or more, "
                f"not {self.max_age_days!r}."
            )

    @classmethod
    def from_settings(cls, **given: int | None) -> Policy:
        """The policy of the settings (BACKUP_KEEP_COUNT, SYNC_KEEP_DAILY/WEEKLY/MONTHLY,
        BACKUP_MAX_AGE_DAYS), each rule given as other than None replacing its setting."""
        defaults: dict[str, Any] = {
            "keep_last": sync_settings.BACKUP_KEEP_COUNT or 0,
            "keep_daily": sync_settings.SYNC_KEEP_DAILY,
            "keep_weekly": sync_settings.SYNC_KEEP_WEEKLY,
            "keep_monthly": sync_settings.SYNC_KEEP_MONTHLY,
            "max_age_days": sync_settings.BACKUP_MAX_AGE_DAYS,
        }
        return cls(
            **(defaults | {name: value for name, value in given.items() if value is not None})
        )

    @property
    def is_empty(self) -> bool:
        """No rule at all: everything is kept (as restic's forget refuses to guess)."""
        counts = (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly)
        return not any(counts) and self.max_age_days is None

    def __str__(self) -> str:
        parts = [
            f"{name} {count}"
            for name, count in (
                ("keep-last", self.keep_last),
                ("keep-daily", self.keep_daily),
                ("keep-weekly", self.keep_weekly),
                ("keep-monthly", self.keep_monthly),
            )
            if count
        ]
        if self.max_age_days is not None:
            parts.append(f"max-age {self.max_age_days} days")
        return ", ".join(parts) or "no rule: everything is kept"


@dataclass(frozen=True)
class Backup:
    """What the policy knows of a backup. ``status``: a Job.Status, or ``"stale"`` for a
    running job whose process is gone; ``present``: its archive is in the storage listing."""

    id: int
    time: datetime
    status: str = Job.Status.SUCCEEDED
    depends_on: tuple[int, ...] = ()
    present: bool = True


# What a decision is, in one word; ``Decision.rules`` says which rules.
KEEP, DELETE = "keep", "delete"


@dataclass(frozen=True)
class Decision:
    backup: Backup
    action: str  # KEEP or DELETE
    rules: tuple[str, ...]  # e.g. ("last", "daily 2026-11-24"), ("older than 30 days",)

    @property
    def keep(self) -> bool:
        return self.action == KEEP

    @property
    def reason(self) -> str:
        return ", ".join(self.rules)


# Statuses of jobs that ended without an archive worth keeping: their leftovers are cleaned.
ENDED_BADLY = (Job.Status.FAILED, Job.Status.CANCELLED, "stale")
# Jobs under way: never touched.
UNDER_WAY = (Job.Status.QUEUED, Job.Status.RUNNING)


def period_day(local: datetime) -> str:
    return f"{local:%Y-%m-%d}"


def period_week(local: datetime) -> str:
    year, week, _ = local.isocalendar()
    return f"{year}-W{week:02d}"


def period_month(local: datetime) -> str:
    return f"{local:%Y-%m}"


PERIODS: dict[str, Callable[[datetime], str]] = {
    "daily": period_day,
    "weekly": period_week,
    "monthly": period_month,
}


def decide(
    backups: Iterable[Backup], policy: Policy, now: datetime, tz: tzinfo | None = None
) -> list[Decision]:
    """One decision per backup, newest first (see the module's docstring and
    docs/rotation.md). Days, weeks and months are those of ``tz`` (default: TIME_ZONE)."""
    tz = tz or timezone.get_default_timezone()
    every = sorted(backups, key=lambda b: (b.time, b.id), reverse=True)
    # The policy ranks the successful backups whose archive is there; the rest is decided by
    # what they are.
    ranked = [b for b in every if b.status == Job.Status.SUCCEEDED and b.present]
    rules: dict[int, list[str]] = {b.id: [] for b in ranked}
    if policy.is_empty:
        for backup in ranked:
            rules[backup.id].append("no rule given")
    keep_rules(ranked, policy, now, tz, rules)
    if ranked and not rules[ranked[0].id]:
        rules[ranked[0].id].append("newest successful")
    others = {b.id: unranked_decision(b) for b in every if b.id not in rules}
    # What stays, whatever it is (a running incremental export too), keeps its parents.
    staying = [b for b in every if rules.get(b.id) or (b.id in others and others[b.id].keep)]
    keep_dependencies(staying, ranked, rules)
    return [
        others[backup.id]
        if backup.id in others
        else ranked_decision(backup, rules[backup.id], policy)
        for backup in every
    ]


def keep_rules(
    ranked: list[Backup], policy: Policy, now: datetime, tz: tzinfo, rules: dict[int, list[str]]
) -> None:
    """Add to ``rules`` what each keep rule keeps of ``ranked`` (newest first)."""
    for backup in ranked[: policy.keep_last]:
        rules[backup.id].append("last")
    for name, count in (
        ("daily", policy.keep_daily),
        ("weekly", policy.keep_weekly),
        ("monthly", policy.keep_monthly),
    ):
        keep_newest_of_periods(ranked, name, count, tz, rules)
    if policy.max_age_days is not None:
        cutoff = now - timedelta(days=policy.max_age_days)
        for backup in ranked:
            if backup.time >= cutoff:
                rules[backup.id].append(f"within {policy.max_age_days} days")


def keep_newest_of_periods(
    ranked: list[Backup], name: str, count: int, tz: tzinfo, rules: dict[int, list[str]]
) -> None:
    """The newest backup of each of the last ``count`` periods that have backups; when the
    backups run out before the periods do, the oldest backup as well (as restic does)."""
    period_of = PERIODS[name]
    previous = None
    for position, backup in enumerate(ranked):
        if count == 0:
            return
        period = period_of(timezone.localtime(backup.time, tz))
        oldest = position == len(ranked) - 1
        if period != previous:
            rules[backup.id].append(f"{name} {period}")
        elif oldest:
            rules[backup.id].append(f"oldest, {name} {period}")
        else:
            continue
        previous = period
        count -= 1


def keep_dependencies(
    staying: list[Backup], ranked: list[Backup], rules: dict[int, list[str]]
) -> None:
    """Keep every ranked backup that a staying backup depends on, and what those depend on
    in turn."""
    by_id = {b.id: b for b in ranked}
    waiting = list(staying)
    while waiting:
        kept = waiting.pop()
        for parent_id in kept.depends_on:
            if parent_id in by_id and not rules[parent_id]:
                rules[parent_id].append(f"needed by #{kept.id}")
                waiting.append(by_id[parent_id])


def ranked_decision(backup: Backup, kept_by: list[str], policy: Policy) -> Decision:
    if kept_by:
        return Decision(backup, KEEP, tuple(kept_by))
    if policy.max_age_days is not None:
        why = f"older than {policy.max_age_days} days, no rule keeps it"
    else:
        why = "no rule keeps it"
    return Decision(backup, DELETE, (why,))


def unranked_decision(backup: Backup) -> Decision:
    if backup.status in UNDER_WAY:
        return Decision(backup, KEEP, (str(backup.status),))
    if backup.status in ENDED_BADLY:
        return Decision(backup, DELETE, (f"{backup.status}: leftover archive",))
    return Decision(backup, KEEP, ("archive not in storage",))


# -- records and storage -----------------------------------------------------------------------


def depends_on(record: BackupRecord) -> list[BackupRecord]:
    """The backups ``record`` cannot be restored without. None today: every archive is whole.
    Incremental exports name their parents here, and rotation keeps them."""
    return []


def listed_archives(storage: Storage) -> set[str]:
    """The archives in the storage. Refuses when the storage cannot be listed: an error must
    never look like an empty storage."""
    try:
        return set(stored_archives(storage))
    except StorageError as exc:
        raise RotationRefused(f"{exc}; nothing was deleted.") from exc


@dataclass
class Planned:
    """A decision with the record and archive it is about."""

    decision: Decision
    record: BackupRecord
    name: str | None  # the archive's name in the storage

    @property
    def deletes_archive(self) -> bool:
        return not self.decision.keep and self.name is not None


@dataclass
class RotationPlan:
    policy: Policy
    using: str
    now: datetime
    entries: list[Planned] = field(default_factory=list)

    @property
    def to_delete(self) -> list[Planned]:
        return [entry for entry in self.entries if not entry.decision.keep]

    @property
    def kept(self) -> list[Planned]:
        return [entry for entry in self.entries if entry.decision.keep]


@dataclass
class RotationResult:
    """What a rotation did, as ``rotation_finished`` sends it and a webhook reports it."""

    plan: RotationPlan
    dry_run: bool = False
    deleted: list[Planned] = field(default_factory=list)
    # Partial archives and spool folders of killed writers, removed (local storage only)
    leftovers: list[str] = field(default_factory=list)
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        def entry(planned: Planned) -> dict[str, Any]:
            return {
                "id": planned.record.pk,
                "backup_id": str(planned.record.backup_id) if planned.record.backup_id else None,
                "archive": planned.name,
                "time": planned.decision.backup.time.isoformat(),
                "reason": planned.decision.reason,
            }

        return {
            "database": self.plan.using,
            "dry_run": self.dry_run,
            "policy": str(self.plan.policy),
            "started_at": self.plan.now.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "deleted": [entry(planned) for planned in self.deleted],
            "kept": [entry(planned) for planned in self.plan.kept],
            "leftovers_removed": self.leftovers,
        }


def backup_time(record: BackupRecord) -> datetime:
    """When the backup was taken: its export started then (queued ones: when asked for)."""
    return record.started_at or record.created_at


def status_of(record: BackupRecord) -> str:
    if record.status == Job.Status.RUNNING and record.is_stale:
        return "stale"
    return record.status


def plan_rotation(
    policy: Policy,
    using: str = "default",
    now: datetime | None = None,
    dependencies: Callable[[BackupRecord], list[BackupRecord]] = depends_on,
) -> RotationPlan:
    """What rotating the backups of database ``using`` by ``policy`` would keep and delete.
    Changes nothing. Refuses (RotationRefused) when the storage cannot be listed, lists
    nothing while records say archives are there, or misses the newest successful backup's
    archive: a listing that cannot be trusted must not decide deletions."""
    now = now or timezone.now()
    storage = archive_storage()
    records = list(BackupRecord.objects.using(using).filter(deleted_at__isnull=True).order_by("pk"))
    names = {record.pk: name_in_storage(record, storage) for record in records}
    # Nothing in the storage to decide about (a new site): no listing needed.
    listing = listed_archives(storage) if any(names.values()) else set()
    check_listing(records, names, listing)
    backups = [
        Backup(
            id=record.pk,
            time=backup_time(record),
            status=status_of(record),
            depends_on=tuple(parent.pk for parent in dependencies(record)),
            present=names[record.pk] in listing,
        )
        for record in records
        if names[record.pk] is not None
    ]
    by_id = {record.pk: record for record in records}
    plan = RotationPlan(policy, using, now)
    decisions = decide(backups, policy, now)
    staying_names = {names[decision.backup.id] for decision in decisions if decision.keep}
    for decision in decisions:
        record = by_id[decision.backup.id]
        name = names[record.pk]
        if not decision.keep and not decision.backup.present:
            continue  # a failed job that left nothing: nothing to delete, nothing to say
        if not decision.keep and name in staying_names:
            # A record that stays names the same archive (a failed export's first-choice name,
            # taken by a later export): this record goes, the archive stays.
            decision = replace(decision, rules=(*decision.rules, "its archive is another's"))
            name = None
        plan.entries.append(Planned(decision, record, name))
    return plan


def check_listing(
    records: list[BackupRecord], names: dict[int, str | None], listing: set[str]
) -> None:
    successful = [
        record
        for record in records
        if record.status == Job.Status.SUCCEEDED and names[record.pk] is not None
    ]
    if not successful:
        return
    if not listing:
        raise RotationRefused(
            f"The archive storage lists no archives while {len(successful)} backup records "
            "say they are there; nothing was deleted. Check the storage settings "
            "(STORAGES['sync'], BACKUP_DIR)."
        )
    newest = max(successful, key=lambda record: (backup_time(record), record.pk))
    if names[newest.pk] not in listing:
        raise RotationRefused(
            f"The newest backup's archive ({names[newest.pk]}, {newest.label}) is not in the "
            "storage listing: the listing looks incomplete; nothing was deleted."
        )


def apply_rotation(plan: RotationPlan) -> RotationResult:
    """Delete the archives ``plan`` deletes and mark their records deleted (when and why),
    remove what killed writers left, then send ``rotation_finished``. A record that changed
    since the plan (deleted by another rotation, a job that is no longer failed) is left alone."""
    result = RotationResult(plan)
    mark_stale_jobs(plan.using)  # stale jobs planned for deletion are failed from here on
    storage = archive_storage()
    for entry in plan.to_delete:
        if not still_deletable(entry, plan.using):
            continue
        try:
            delete_archive(entry, storage, plan.using)
        except Exception as exc:  # the storage's own error, whatever its backend
            done = len(result.deleted)
            raise RotationFailed(
                f"Deleting {entry.name} ({entry.record.label}) failed ({type(exc).__name__}: "
                f"{exc}); {done} archive(s) were deleted before, and their records say so."
            ) from exc
        result.deleted.append(entry)
    result.leftovers = remove_writer_leftovers(storage)
    result.finished_at = timezone.now()
    transaction.on_commit(
        lambda: rotation_finished.send(sender=BackupRecord, result=result), using=plan.using
    )
    return result


def remove_writer_leftovers(storage: Storage) -> list[str]:
    """Partial archives and spool folders of writers that were killed, where the storage is
    a local folder (``sync.archive.remove_leftovers``: by age, so a running export's stay)."""
    if not isinstance(storage, FileSystemStorage):  # S3's "location" is a key prefix
        return []
    removed = remove_leftovers(
        Path(storage.location), older_than=sync_settings.SYNC_JOB_STALE_AFTER
    )
    return sorted(path.name for path in removed)


def still_deletable(entry: Planned, using: str) -> bool:
    backup = entry.decision.backup
    expected = Job.Status.FAILED if backup.status == "stale" else backup.status
    return (
        BackupRecord.objects.using(using)
        .filter(pk=entry.record.pk, deleted_at__isnull=True, status=expected)
        .exists()
    )


def delete_archive(entry: Planned, storage: Storage, using: str) -> None:
    """Delete the archive first, then mark the record: a crash between the two leaves a record
    whose archive is gone (``syncinspect --reconcile`` lists it), never an archive forgotten."""
    if entry.name is not None:
        storage.delete(entry.name)
    now = timezone.now()
    BackupRecord.objects.using(using).filter(pk=entry.record.pk, deleted_at__isnull=True).update(
        deleted_at=now, deleted_reason=entry.decision.reason[:255]
    )
    entry.record.deleted_at, entry.record.deleted_reason = now, entry.decision.reason[:255]


def rotate(
    policy: Policy | None = None,
    using: str = "default",
    dry_run: bool = False,
    dependencies: Callable[[BackupRecord], list[BackupRecord]] = depends_on,
) -> RotationResult:
    """Plan and apply a rotation (the settings' policy unless given); a dry run only plans."""
    plan = plan_rotation(policy or Policy.from_settings(), using, dependencies=dependencies)
    if dry_run:
        return RotationResult(plan, dry_run=True)
    return apply_rotation(plan)
