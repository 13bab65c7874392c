"""Backups as files: opening and checking a backup record's archive (through
``sync.storage``), and recording an archive uploaded from elsewhere (verified before any
record of it exists).

The admin's Verify, Download and Upload call these; ``syncverify`` checks a path the same way.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from django.core.files import File
from django.utils import timezone

from sync.archive import ArchiveError, file_sha256, looks_like_backup
from sync.errors import SyncError
from sync.models import BackupRecord, Job
from sync.storage import ArchiveLocation, archive_storage, recorded_location
from sync.verify import VerifyReport, verify_archive


class BackupError(SyncError):
    """A backup's archive that cannot be had or recorded; the message says why."""


def backup_location(backup: BackupRecord) -> ArchiveLocation:
    """Where the archive of ``backup`` is (a local file or a name in the archive storage)."""
    if backup.status != Job.Status.SUCCEEDED or not backup.storage_path:
        raise BackupError(f"{backup.label} has no archive: it {backup.status}.")
    return recorded_location(backup.storage_path)


def open_archive(backup: BackupRecord) -> IO[bytes]:
    """The archive of ``backup`` as a stream read in chunks (never read whole)."""
    try:
        return backup_location(backup).open()
    except (ArchiveError, OSError) as exc:
        raise BackupError(f"{backup.file_name} is gone: {exc}") from exc


def verify_backup(backup: BackupRecord) -> VerifyReport:
    """Check the archive of ``backup`` completely (``sync.verify``); ArchiveError at the first
    problem, BackupError if there is no archive to check."""
    with backup_location(backup).local_file() as path:
        return verify_archive(path)


def record_upload(upload: File, name: str, user=None, using: str = "default") -> BackupRecord:
    """Verify the uploaded archive ``upload``, then store it in the archive storage under
    ``name`` (or a free variant of it) and record it as a succeeded backup.

    A bad archive raises ArchiveError with the one-line reason ``syncverify`` gives; nothing
    is stored or recorded then."""
    name = Path(name).name
    if not looks_like_backup(name):
        raise BackupError(
            f"{name}: not a backup archive's name (….backup.tar.gz, .tar.zst, .tar.xz, …)."
        )
    with local_copy(upload, name) as path:
        try:
            report = verify_archive(path)
        except ArchiveError as exc:  # as syncverify says it
            raise ArchiveError(f"{name}: {exc}") from exc
        sha256 = file_sha256(path)
    data = report.index.data
    backup_id = uuid.UUID(data["backup_id"])
    known = BackupRecord.objects.using(using).filter(backup_id=backup_id).first()
    if known is not None:
        raise BackupError(f"{name}: this archive is recorded already, as {known}.")
    upload.seek(0)
    stored = archive_storage().save(name, upload)
    return BackupRecord.objects.using(using).create(
        status=Job.Status.SUCCEEDED,
        database=using,
        user=user,
        started_by="" if user else "upload",
        file_name=stored,
        storage_path=stored,  # a name in the archive storage, as exports record theirs
        backup_id=backup_id,
        kind=data.get("kind", "full"),
        tables=list(report.counts),
        include_secrets=bool(data.get("include_secrets")),
        counts=report.counts,
        total_records=report.total,
        size=upload.size,
        sha256=sha256,
        compression=data.get("compression", ""),
        format_version=report.index.version,
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )


@contextmanager
def local_copy(upload: File, name: str) -> Iterator[Path]:
    """The upload as a file on disk named ``name`` (what a reader's messages call it), in a
    temporary folder: a hard link to the temporary file Django spooled a large upload to, else
    a copy."""
    with tempfile.TemporaryDirectory(prefix="sync-upload-") as folder:
        path = Path(folder) / name
        spooled = getattr(upload, "temporary_file_path", None)
        try:
            if spooled is None:
                raise OSError("held in memory")
            os.link(spooled(), path)
        except OSError:  # in memory, or on another file system: copied
            upload.seek(0)
            with path.open("wb") as copy:
                for chunk in upload.chunks():
                    copy.write(chunk)
        yield path
