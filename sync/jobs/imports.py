"""Import jobs: created (``start_import``), then executed (``execute_import``) inline or by a
worker — locked, verified before the first write, one transaction, recorded to their end.

Commands, Celery tasks and admin views go through here; ``sync.importer`` is the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path, PurePath
from typing import Any

from django.db import OperationalError, connections, transaction
from django.utils import timezone

from sync.archive import ArchiveError
from sync.conf import sync_settings
from sync.importer import MODES, ImportFailed, ImportResult, import_records
from sync.jobs.lifecycle import (
    JobError,
    announce,
    channel_of,
    claim,
    end_dead,
    executing,
    finish,
    is_stale,
    load_job,
    mark_stale_jobs,
)
from sync.jobs.plans import apply_options, check_applied, plan_recorder
from sync.jobs.reporter import JobReporter
from sync.locking import LockBusy, import_lock, write_transaction
from sync.models import ImportRun, Job, SyncState
from sync.sources import ArchiveSource
from sync.storage import archive_name_problem, locate_archive
from sync.verify import VerifyProcess

INTERRUPTED = (
    "Interrupted: the importing process ended before the import finished; its changes were "
    "rolled back."
)


@contextmanager
def verification(archive: Path) -> Iterator[VerifyProcess]:
    """Verify ``archive`` in a separate process while the import reads it; the importer's
    write gate waits for the verdict before its first write (see sync.writer.WriteGate)."""
    checker = VerifyProcess(archive, sync_settings.SYNC_MAX_MEMBER_SIZE)
    try:
        yield checker
    finally:
        checker.stop()


def start_import(archive: Path | str, **options: Any) -> ImportRun:
    """Record an import to be done (queued): everything ``execute_import`` needs is on the row
    (options: see ``new_import``)."""
    run = new_import(archive, **options)
    mark_stale_jobs(run.database)
    run.save(using=run.database)
    return run


def new_import(
    archive: Path | str,
    mode: str = "replace",
    using: str = "default",
    dry_run: bool = False,
    tables: Iterable[str] | None = None,
    collect_changes: bool = False,
    drop_unresolved: bool = False,
    applies: ImportRun | None = None,
    started_by: str = "",
    user=None,
    task_id: str = "",
) -> ImportRun:
    """An import job, not saved yet; an unknown mode is refused."""
    if mode not in MODES:
        raise ImportFailed(f"Unknown mode {mode!r}: use one of {', '.join(MODES)}.")
    if problem := archive_name_problem(str(archive)):
        raise ImportFailed(problem)
    return ImportRun(
        archive=str(archive),
        mode=mode,
        dry_run=dry_run,
        tables=list(tables or []),
        collect_changes=collect_changes,
        drop_unresolved=drop_unresolved,
        applies=applies,
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
        run.refresh_from_db()
        if run.status != Job.Status.QUEUED:  # the lock's holder runs this very job
            raise JobError(
                f"{run.label} is {run.status}: only a queued job can be executed."
            ) from exc
        message = refusal(using)
        record_refusal(run, message)
        raise ImportFailed(message) from exc


def apply_plan(
    plan_name: str, using: str = "default", **options: Any
) -> tuple[ImportResult, ImportRun]:
    """Import what dry run ``plan_name`` (``import-7``) previewed, with its archive and options;
    refused before the commit if the outcome differs from the plan (see sync.plan)."""
    return run_import(**apply_options(plan_name, using), **options)


def run_import(
    archive: Path | str, *, reporter: JobReporter | None = None, **options: Any
) -> tuple[ImportResult, ImportRun]:
    """Create and execute an import at once, as the commands do (options: see
    ``new_import``).

    The import lock is taken before anything is written, the job's row included: a second
    import is refused at once (its row is written if that does not mean waiting)."""
    run = new_import(archive, **options)
    try:
        with import_lock(run.database):
            mark_stale_jobs(run.database)
            run.save(using=run.database)
            result = execute_locked(run, reporter or JobReporter())
    except LockBusy as exc:
        message = refusal(run.database)
        record_refusal(run, message)
        raise ImportFailed(message) from exc
    return result, run


def execute_locked(run: ImportRun, reporter: JobReporter) -> ImportResult:
    """Run ``run`` holding the import lock, and record how it ended."""
    using = run.database
    end_dead_imports(using)
    claim(run)
    name = PurePath(run.archive).name
    # A real import's changes and its job's end commit together; a dry run changes nothing,
    # and must not hold SQLite's write lock for its whole length.
    together = nullcontext() if run.dry_run else write_transaction(using)
    try:
        # A local path of the archive: one in a remote storage is spooled to a temporary file
        # first, before the transaction (the verifying process and the reader both read it).
        with (
            executing(run, reporter, "nothing was changed"),
            locate_archive(run.archive).local_file() as archive,
            together,
        ):
            with verification(archive) as verdict:
                source = ArchiveSource(archive)
                recorder = plan_recorder(run, archive)
                try:
                    result = import_records(
                        source,
                        mode=run.mode,
                        using=using,
                        dry_run=run.dry_run,
                        tables=run.tables or None,
                        drop_unresolved=run.drop_unresolved,
                        reporter=reporter,
                        verdict=verdict,
                        recorder=recorder,
                    )
                except BaseException:
                    if recorder is not None:
                        recorder.discard()
                    raise
                if recorder is not None:
                    digests = recorder.close()
                    if run.applies_id is not None:  # before the commit: else it rolls back
                        check_applied(run, digests)
            backup_id = uuid.UUID(source.backup_id) if source.backup_id else None
            finish(
                run,
                Job.Status.SUCCEEDED,
                progress=reporter.snapshot(),
                backup_id=backup_id,
                counts=result.counts(),
            )
            if not run.dry_run:
                SyncState.objects.using(using).update_or_create(
                    database=using,
                    defaults={"last_import_at": run.finished_at, "last_sync_id": run.backup_id},
                )
    except ArchiveError as exc:
        message = str(exc) if name in str(exc) else f"{name}: {exc}"
        raise ImportFailed(message, member=exc.member, line=exc.line) from exc
    return result


def end_dead_imports(using: str) -> None:
    """Holding the import lock, no other import runs on ``using``: imports still recorded as
    running were killed, whatever their heartbeat says (it may not have aged yet)."""
    for run in ImportRun.objects.using(using).filter(status=Job.Status.RUNNING):
        end_dead(run, INTERRUPTED, "interrupted")


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


def record_refusal(run: ImportRun, message: str) -> None:
    """Record ``run`` as refused (failed), unless that would wait for the running import:
    SQLite has one writer at a time, and the refusal must not wait for the import it
    refuses. A queued job whose row cannot be written then keeps its refusal in the sync
    cache: it shows failed, and the next job started records it (``end_refused``)."""
    run.status, run.error = Job.Status.FAILED, message
    run.error_detail, run.finished_at = {"reason": "refused"}, timezone.now()
    connection = connections[run.database]
    if connection.vendor != "sqlite":
        run.save(using=run.database)
        announce(run)
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        (timeout,) = cursor.fetchone()
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            # "database is locked": the running import is writing. The atomic block spoils
            # no caller's transaction.
            with transaction.atomic(using=run.database):
                run.save(using=run.database)
                announce(run)
        except OperationalError:
            if run.pk is not None:  # queued: its refusal waits in the cache
                channel_of(run).record_refusal(message)
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {int(timeout)}")
