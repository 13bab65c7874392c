"""An import as users start it: locked, recorded, verified before its first write, run in one
transaction.

Commands, Celery tasks and admin views call ``run_import``; nothing else does this work.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from django.db import OperationalError, connections, transaction
from django.utils import timezone

from sync.archive import ArchiveError
from sync.conf import sync_settings
from sync.importer import ImportFailed, ImportResult, Progress, import_records
from sync.locking import LockBusy, import_lock, write_transaction
from sync.models import ImportRun, SyncState, mark_stale
from sync.sources import ArchiveSource
from sync.verify import VerifyProcess

INTERRUPTED = (
    "Interrupted: the importing process ended before the import finished; its changes were "
    "rolled back."
)
INTERRUPTED_BY_USER = "Interrupted (Ctrl-C) before the import finished; nothing was changed."


@contextmanager
def verification(archive: Path) -> Iterator[VerifyProcess]:
    """Verify ``archive`` in a separate process while the import reads it; the importer's
    write gate waits for the verdict before its first write (see sync.writer.WriteGate)."""
    checker = VerifyProcess(archive, sync_settings.SYNC_MAX_MEMBER_SIZE)
    try:
        yield checker
    finally:
        checker.stop()


def running_import(using: str) -> ImportRun | None:
    """The import recorded as running whose process is alive, oldest first."""
    runs = ImportRun.objects.using(using).filter(status=ImportRun.Status.RUNNING)
    return next((run for run in runs.order_by("started_at") if not run.is_stale), None)


def run_import(
    archive: Path | str,
    mode: str = "replace",
    using: str = "default",
    dry_run: bool = False,
    tables: Iterable[str] | None = None,
    collect_changes: bool = False,
    started_by: str = "",
    progress: Progress | None = None,
    drop_unresolved: bool = False,
) -> tuple[ImportResult, ImportRun]:
    """Verify ``archive`` completely, then import it; raise ImportFailed with a clear message.

    The database's import lock is taken before anything is written, the ImportRun row
    included, so a second import is refused at once. The ImportRun row is committed before
    the work starts; the import's changes and the row's final state commit together.
    """
    archive = Path(archive)
    run = ImportRun(
        archive=str(archive),
        mode=mode,
        dry_run=dry_run,
        tables=list(tables or []),
        database=using,
        started_by=started_by,
        pid=os.getpid(),
        hostname=socket.gethostname(),
    )
    try:
        with import_lock(using):
            # Imports killed earlier (their process is gone) still say 'running'.
            mark_stale(ImportRun.objects.using(using), INTERRUPTED)
            run.save(using=using)
            result = import_recorded(
                run,
                archive,
                collect_changes=collect_changes,
                progress=progress,
                drop_unresolved=drop_unresolved,
            )
    except LockBusy as exc:
        message = refusal(using)
        record_refusal(run, message)
        raise ImportFailed(message) from exc
    return result, run


def import_recorded(run: ImportRun, archive: Path, **options: Any) -> ImportResult:
    """Import into ``run.database`` as ``run`` says (more ``options``: see Importer) and
    record how it ended on ``run``."""
    using = run.database
    # A real import's changes and its run's final state commit together; a dry run changes
    # nothing, and must not hold SQLite's write lock for its whole length.
    together = nullcontext() if run.dry_run else write_transaction(using)
    try:
        with together:
            with verification(archive) as verdict:
                source = ArchiveSource(archive)
                result = import_records(
                    source,
                    mode=run.mode,
                    using=using,
                    dry_run=run.dry_run,
                    tables=run.tables,
                    verdict=verdict,
                    **options,
                )
            run.backup_id = uuid.UUID(source.backup_id) if source.backup_id else None
            finish(run, ImportRun.Status.SUCCEEDED, counts=result.counts())
            if not run.dry_run:
                SyncState.objects.using(using).update_or_create(
                    database=using,
                    defaults={"last_import_at": run.finished_at, "last_sync_id": run.backup_id},
                )
    except ImportFailed as exc:
        finish(run, ImportRun.Status.FAILED, error=str(exc))
        raise
    except ArchiveError as exc:
        finish(run, ImportRun.Status.FAILED, error=str(exc))
        message = str(exc) if archive.name in str(exc) else f"{archive.name}: {exc}"
        raise ImportFailed(message) from exc
    except KeyboardInterrupt:
        finish(run, ImportRun.Status.FAILED, error=INTERRUPTED_BY_USER)
        raise
    except BaseException as exc:
        finish(run, ImportRun.Status.FAILED, error=str(exc) or type(exc).__name__)
        raise
    return result


def refusal(using: str) -> str:
    other = running_import(using)
    who = (
        f"import #{other.pk} of {other.archive} started {other.started_at:%Y-%m-%d %H:%M:%S} "
        f"by {other.started_by or 'unknown'} (pid {other.pid} on {other.hostname})"
        if other
        else "another import"
    )
    return f"Refused: {who} is running on database {using!r}; try again when it ends."


def record_refusal(run: ImportRun, message: str) -> None:
    """Record ``run`` as refused, unless that would wait for the running import: SQLite has
    one writer at a time, and the refusal must not wait for the import it refuses."""
    run.status, run.error, run.finished_at = ImportRun.Status.REFUSED, message, timezone.now()
    connection = connections[run.database]
    if connection.vendor != "sqlite":
        run.save(using=run.database)
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        (timeout,) = cursor.fetchone()
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            with transaction.atomic(using=run.database):  # a failure spoils no caller's
                run.save(using=run.database)
        except OperationalError:  # "database is locked": the running import is writing
            run.pk = None
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {int(timeout)}")


def finish(run: ImportRun, status: str, error: str = "", counts: dict | None = None) -> None:
    run.status = status
    run.error = error
    run.finished_at = timezone.now()
    if counts is not None:
        run.counts = counts
    run.save(using=run._state.db)
