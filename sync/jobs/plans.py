"""Plans and jobs: a dry run writes its plan; an import that applies it checks, before it
commits, that it did what the plan said (see docs/plans.md)."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connections

from sync.archive import ArchiveError
from sync.conf import sync_settings
from sync.importer import ImportFailed
from sync.jobs.lifecycle import JobError, find_job
from sync.models import FINISHED, ImportRun, Job
from sync.plan import Plan, PlanError, PlanRecorder, database_tag, differences, plan_dir, plan_path
from sync.storage import ArchiveLocation, locate_archive

HINT = "preview again (syncimport --dry-run) and apply the new plan"


def plan_of(run: ImportRun) -> Path:
    return plan_path(run.label, database_identity(run.database), run.created_at)


def database_identity(using: str) -> list:
    """What tells one database from another: its vendor, name, host and port (not the alias,
    which differs between settings files)."""
    connection = connections[using]
    conf = connection.settings_dict
    return [
        connection.vendor,
        str(conf["NAME"]),
        conf.get("HOST") or "",
        str(conf.get("PORT") or ""),
    ]


def archive_digest(archive: ArchiveLocation) -> str:
    """The sha256 of the archive, a local file or one in the archive storage, read in chunks."""
    digest = hashlib.sha256()
    with archive.open() as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def plan_recorder(run: ImportRun, archive: Path) -> PlanRecorder | None:
    """The recorder of ``run``'s plan: a dry run's, a real import's that applies one or was
    asked for its changes (``collect_changes``); ``archive`` is the local file it reads (a
    copy of one in a remote storage)."""
    if not (run.dry_run or run.collect_changes or run.applies_id is not None):
        return None
    if run.dry_run:
        prune_plans(run.database)
    meta = {
        "job": run.label,
        "database": database_identity(run.database),
        "archive": run.archive,
        "sha256": archive_digest(ArchiveLocation(str(archive), path=archive)),
        "mode": run.mode,
        "tables": run.tables,
        "drop_unresolved": run.drop_unresolved,
    }
    return PlanRecorder(plan_of(run), meta)


def apply_options(plan_name: str, using: str) -> dict[str, Any]:
    """The options of an import applying dry run ``plan_name``; refused when it is not a
    finished dry run of this database with a plan, or its archive changed since."""
    try:
        job = find_job(plan_name, using)
    except JobError as exc:
        raise ImportFailed(str(exc)) from exc
    if not isinstance(job, ImportRun) or not job.dry_run:
        raise ImportFailed(f"{job.label} is not a dry run: only a dry run's plan can be applied.")
    if job.status != Job.Status.SUCCEEDED:
        raise ImportFailed(f"{job.label} is {job.status}: only a finished dry run's plan applies.")
    meta = read_meta(job)
    if meta["database"] != database_identity(using):
        raise ImportFailed(
            f"{job.label}'s plan was made on another database ({meta['database'][0]} "
            f"{meta['database'][1]!r}), not on {using!r}: {HINT}."
        )
    archive = locate_archive(job.archive)
    try:
        unchanged = archive_digest(archive) == meta["sha256"]
    except (ArchiveError, OSError):  # gone
        unchanged = False
    if not unchanged:
        raise ImportFailed(
            f"{job.label}'s archive {archive.text} changed or is gone since the preview: {HINT}."
        )
    return {
        "archive": job.archive,
        "mode": job.mode,
        "using": using,
        "tables": job.tables,
        "drop_unresolved": job.drop_unresolved,
        "applies": job,
    }


def read_meta(job: ImportRun) -> dict[str, Any]:
    try:
        plan = Plan(plan_of(job))
    except PlanError as exc:
        raise ImportFailed(f"{job.label}: {exc}") from exc
    try:
        return plan.meta()
    finally:
        plan.close()


@dataclass(frozen=True)
class PlanMismatch:
    """Where an import that applies a plan differs from it: the tables, and the first record
    of each (``app.Model 'key'``)."""

    tables: list[str]
    records: list[str]


def mismatch(run: ImportRun, digests: dict[str, str] | None = None) -> PlanMismatch | None:
    """How import ``run`` differs from the plan it applies (None: it does not), from the
    tables' ``digests`` of what it did (default: those its stored plan holds)."""
    planned = Plan(plan_of(run.applies))
    try:
        done = Plan(plan_of(run))
        try:
            expected = planned.meta()["digests"]
            if digests is None:
                digests = done.meta().get("digests", {})
            tables = sorted(
                t for t in expected.keys() | digests.keys() if expected.get(t) != digests.get(t)
            )
            if not tables:
                return None
            return PlanMismatch(tables, differences(planned, done, tables))
        finally:
            done.close()
    finally:
        planned.close()


def check_applied(run: ImportRun, digests: dict[str, str]) -> None:
    """Refuse (ImportFailed: the import rolls back) when ``run`` did not do what the plan it
    applies said, naming the tables and the first records that differ."""
    found = mismatch(run, digests)
    if found is None:
        return
    raise ImportFailed(
        f"Refused: the database changed since {run.applies.label}'s preview; the import would "
        f"differ from its plan in {', '.join(found.tables)} (first: {'; '.join(found.records)}); "
        f"nothing was changed: {HINT}.",
        table=found.tables[0],
    )


_PLAN_FILE = re.compile(r"import-(\d+)-([0-9a-f]{12})-\d{8}T\d{12}\.plan\.sqlite3")


def prune_plans(using: str) -> list[Path]:
    """Remove the plans of database ``using`` older than ``SYNC_PLAN_KEEP_DAYS`` (by when
    they were written), except those still needed: the plan of a job that has not ended, and
    one that an import which has not ended applies. Plans of other databases sharing the
    folder are theirs to prune. Return the removed paths (see docs/plans.md)."""
    folder = plan_dir()
    if not folder.is_dir():
        return []
    tag = database_tag(database_identity(using))
    cutoff = time.time() - sync_settings.SYNC_PLAN_KEEP_DAYS * 24 * 3600
    old = {}
    for path in folder.iterdir():
        match = _PLAN_FILE.fullmatch(path.name)
        if match is None or match[2] != tag:
            continue
        try:
            if path.stat().st_mtime < cutoff:
                old[path] = int(match[1])
        except FileNotFoundError:  # removed meanwhile
            continue
    if not old:
        return []
    unfinished = ImportRun.objects.using(using).exclude(status__in=FINISHED)
    needed = set(unfinished.values_list("pk", flat=True))
    needed |= set(unfinished.exclude(applies=None).values_list("applies_id", flat=True))
    needed_paths = {plan_of(run) for run in ImportRun.objects.using(using).filter(pk__in=needed)}
    removed = []
    for path in old:
        if path not in needed_paths:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
