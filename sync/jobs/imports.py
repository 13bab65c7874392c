"""Import jobs: created (``start_import``), then executed (``execute_import``) inline or by a
worker — locked, verified before the first write, one transaction, recorded to their end.

Commands, Celery tasks and admin views go through here; ``sync.importer`` is the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction

from sync.archive import ArchiveError
from sync.importer import MODES, ImportFailed, ImportResult, import_records
from sync.jobs.lifecycle import claim, executing, finish, is_stale, load_job, mark_stale_jobs
from sync.jobs.reporter import JobReporter
from sync.locking import LockBusy, import_lock
from sync.models import ImportRun, Job, SyncState
from sync.sources import ArchiveSource
from sync.verify import VerifyProcess


@contextmanager
def verification(archive: Path) -> Iterator[VerifyProcess]:
    """Verify ``archive`` in a separate process while the import reads it; the importer's
    write gate waits for the verdict before its first write (see sync.writer.WriteGate)."""
    checker = VerifyProcess(archive, settings.SYNC_MAX_MEMBER_SIZE)
    try:
        yield checker
    finally:
        checker.stop()


def start_import(
    archive: Path | str,
    mode: str = "replace",
    using: str = "default",
    dry_run: bool = False,
    tables: Iterable[str] | None = None,
    collect_changes: bool = False,
    drop_unresolved: bool = False,
    started_by: str = "",
    user=None,
    task_id: str = "",
) -> ImportRun:
    """Record an import to be done (queued): everything ``execute_import`` needs is on the row."""
    if mode not in MODES:
        raise ImportFailed(f"Unknown mode {mode!r}: use one of {', '.join(MODES)}.")
    mark_stale_jobs(using)
    return ImportRun.objects.using(using).create(
        archive=str(archive),
        mode=mode,
        dry_run=dry_run,
        tables=list(tables or []),
        collect_changes=collect_changes,
        drop_unresolved=drop_unresolved,
        database=using,
        started_by=started_by,
        user=user,
        task_id=task_id,
    )


def execute_import(
    run_id: int, using: str = "default", reporter: JobReporter | None = None
) -> ImportResult:
    """Run the queued import ``run_id`` of database ``using``; raise ImportFailed with a clear
    message, or JobCancelled (rolled back: the database is as before)."""
    run = load_job(ImportRun, run_id, using)
    try:
        with import_lock(using):
            return execute_locked(run, reporter or JobReporter())
    except LockBusy as exc:
        message = refusal(using)
        # On SQLite the running import holds the database: the row then stays queued.
        with suppress(DatabaseError):
            finish(run, Job.Status.FAILED, error=message, detail={"reason": "refused"})
        raise ImportFailed(message) from exc


def run_import(
    archive: Path | str, *, reporter: JobReporter | None = None, **options: Any
) -> tuple[ImportResult, ImportRun]:
    """Create and execute an import at once, as the commands do (options: see
    ``start_import``).

    The import lock is taken before the job's row is written: a second import is refused at
    once and leaves no row (on SQLite it could not write one while the first holds the
    database)."""
    using = options.get("using", "default")
    try:
        with import_lock(using):
            run = start_import(archive, **options)
            result = execute_locked(run, reporter or JobReporter())
    except LockBusy as exc:
        raise ImportFailed(refusal(using)) from exc
    return result, run


def execute_locked(run: ImportRun, reporter: JobReporter) -> ImportResult:
    claim(run)
    using = run.database
    archive = Path(run.archive)
    try:
        with (
            executing(run, reporter, "nothing was imported (rolled back)"),
            verification(archive) as verdict,
        ):
            source = ArchiveSource(archive)
            result = import_records(
                source,
                mode=run.mode,
                using=using,
                dry_run=run.dry_run,
                tables=run.tables or None,
                collect_changes=run.collect_changes,
                drop_unresolved=run.drop_unresolved,
                reporter=reporter,
                verdict=verdict,
            )
    except ArchiveError as exc:
        message = str(exc) if archive.name in str(exc) else f"{archive.name}: {exc}"
        raise ImportFailed(message) from exc
    backup_id = uuid.UUID(source.backup_id) if source.backup_id else None
    finish(
        run,
        Job.Status.SUCCEEDED,
        progress=reporter.snapshot(),
        backup_id=backup_id,
        counts=result.counts(),
    )
    if not run.dry_run:
        with transaction.atomic(using=using):
            SyncState.objects.using(using).update_or_create(
                database=using,
                defaults={"last_import_at": run.finished_at, "last_sync_id": run.backup_id},
            )
    return result


def running_import(using: str) -> ImportRun | None:
    """The import that holds the lock, as far as the rows tell (stale ones are not it)."""
    runs = ImportRun.objects.using(using).filter(status=Job.Status.RUNNING)
    return next((run for run in runs.order_by("-started_at") if not is_stale(run)), None)


def refusal(using: str) -> str:
    other = running_import(using)
    if other is None:
        return f"Refused: another import is running on database {using!r}; try again when it ends."
    started = f"{other.started_at:%Y-%m-%d %H:%M:%S}" if other.started_at else "just now"
    return (
        f"Refused: {other.label} ({other.mode} import of {other.archive}, started {started} by "
        f"{other.who or 'unknown'}, pid {other.pid} on {other.hostname}) is running on "
        f"database {using!r}; try again when it ends, or stop it: syncjobs --cancel {other.label}"
    )
