"""Records against the storage: archives in the storage that no record names, and records
whose archive is gone (``syncinspect --reconcile``, docs/storage.md).

Fixing records the former (a succeeded ``BackupRecord`` built from the archive's index) and
marks the latter missing (``missing_since``). It never deletes a file, nor a record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.core.files.storage import Storage
from django.utils import timezone

from sync.archive import ArchiveError, read_index
from sync.models import BackupRecord, Job
from sync.storage import archive_storage, name_in_storage, recorded_location, stored_archives


@dataclass
class Unreadable:
    """An archive-looking file in the storage whose index cannot be read."""

    name: str
    error: str


@dataclass
class Reconciliation:
    """What the storage and the records of one database disagree on."""

    # Names in the storage that no record names
    unrecorded: list[str] = field(default_factory=list)
    # Succeeded records whose archive is not in the storage
    missing: list[BackupRecord] = field(default_factory=list)
    # After fixing: the records made for unrecorded archives, and those that could not be
    recorded: list[BackupRecord] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    marked: list[BackupRecord] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not (self.unrecorded or self.missing)


def reconcile(using: str = "default", storage: Storage | None = None) -> Reconciliation:
    """Compare the storage's archives with the records of database ``using``."""
    storage = storage or archive_storage()
    stored = set(stored_archives(storage))
    named: set[str] = set()
    result = Reconciliation()
    # Every record names its archive, whatever its status: a running export's name is taken
    # before its archive appears, and a failed one's never appears.
    for record in BackupRecord.objects.using(using).order_by("created_at"):
        name = name_in_storage(record, storage)
        if name is None:
            continue
        named.add(name)
        gone_by_rotation = record.deleted_at is not None
        if record.status == Job.Status.SUCCEEDED and name not in stored and not gone_by_rotation:
            result.missing.append(record)
    result.unrecorded = sorted(stored - named)
    return result


def fix(
    result: Reconciliation, using: str = "default", storage: Storage | None = None
) -> Reconciliation:
    """Record the unrecorded archives of ``result`` and mark its missing records."""
    storage = storage or archive_storage()
    now = timezone.now()
    for record in result.missing:
        if record.missing_since is None:
            record.missing_since = now
            record.save(using=using, update_fields=["missing_since"])
            result.marked.append(record)
    for name in result.unrecorded:
        try:
            result.recorded.append(record_archive(name, using, storage))
        except ArchiveError as exc:
            result.unreadable.append(Unreadable(name, str(exc)))
    return result


def record_archive(name: str, using: str, storage: Storage) -> BackupRecord:
    """A succeeded record of the archive ``name`` in the storage, from its index (read from
    the head of the archive only: its sha256 stays unknown)."""
    index = read_index(recorded_location(name, storage))
    data = index.data
    created = parse_time(data.get("created_at")) or timezone.now()
    backup_id = index.backup_id
    if BackupRecord.objects.using(using).filter(backup_id=backup_id).exists():
        backup_id = None  # a copy of a recorded archive under another name
    counts = {table.label: table.count for table in index.tables}
    return BackupRecord.objects.using(using).create(
        status=Job.Status.SUCCEEDED,
        file_name=Path(name).name,
        storage_path=name,
        backup_id=backup_id,
        kind=data.get("kind", "")[:20],
        tables=list(counts),
        include_secrets=data.get("include_secrets", False),
        counts=counts,
        total_records=sum(counts.values()),
        size=storage.size(name),
        compression=data.get("compression", "")[:10],
        format_version=index.version,
        database=using,
        started_by="syncinspect --reconcile --fix",
        created_at=created,
        started_at=created,
        finished_at=created,
    )


def parse_time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
