"""An import as users start it: recorded, locked, verified before its first write, run in one
transaction.

Commands, Celery tasks and admin views call ``run_import``; nothing else does this work.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from sync.archive import ArchiveError
from sync.importer import ImportFailed, ImportResult, Progress, import_records
from sync.locking import LockBusy, import_lock
from sync.models import ImportRun, SyncState
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


def running_import(using: str, exclude: int | None = None) -> ImportRun | None:
    runs = ImportRun.objects.using(using).filter(status=ImportRun.Status.RUNNING)
    return runs.exclude(pk=exclude).order_by("started_at").first()


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

    The ImportRun row is committed before the work starts and finished afterwards, whatever
    happens, so a failed or refused import leaves a record and nothing else.
    """
    archive = Path(archive)
    run = ImportRun.objects.using(using).create(
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
        with import_lock(using), verification(archive) as verdict:
            source = ArchiveSource(archive)
            result = import_records(
                source,
                mode=mode,
                using=using,
                dry_run=dry_run,
                tables=tables,
                collect_changes=collect_changes,
                progress=progress,
                verdict=verdict,
                drop_unresolved=drop_unresolved,
            )
    except LockBusy as exc:
        other = running_import(using, exclude=run.pk)
        who = (
            f"import #{other.pk} of {other.archive} started {other.started_at:%Y-%m-%d %H:%M:%S} "
            f"by {other.started_by or 'unknown'} (pid {other.pid} on {other.hostname})"
            if other
            else "another import"
        )
        message = f"Refused: {who} is running on database {using!r}; try again when it ends."
        finish(run, ImportRun.Status.REFUSED, error=message)
        raise ImportFailed(message) from exc
    except ImportFailed as exc:
        finish(run, ImportRun.Status.FAILED, error=str(exc))
        raise
    except ArchiveError as exc:
        finish(run, ImportRun.Status.FAILED, error=str(exc))
        message = str(exc) if archive.name in str(exc) else f"{archive.name}: {exc}"
        raise ImportFailed(message) from exc
    except BaseException as exc:
        finish(run, ImportRun.Status.FAILED, error=str(exc) or type(exc).__name__)
        raise
    run.backup_id = uuid.UUID(source.backup_id) if source.backup_id else None
    finish(run, ImportRun.Status.SUCCEEDED, counts=result.counts())
    if not dry_run:
        with transaction.atomic(using=using):
            SyncState.objects.using(using).update_or_create(
                database=using,
                defaults={"last_import_at": run.finished_at, "last_sync_id": run.backup_id},
            )
    return result, run


def finish(run: ImportRun, status: str, error: str = "", counts: dict | None = None) -> None:
    run.status = status
    run.error = error
    run.finished_at = timezone.now()
    if counts is not None:
        run.counts = counts
    run.save(using=run._state.db)
