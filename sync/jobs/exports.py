"""Export jobs: created (``start_export``), then executed (``execute_export``) inline or by a
worker — recorded to their end, stale jobs marked, leftovers of dead writers removed.

Commands, Celery tasks and admin views go through here; ``sync.exporter`` writes the archive.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import models

from sync.archive import FORMAT_VERSION, check_compression, remove_leftovers
from sync.conf import sync_settings
from sync.exporter import TableFilter, archive_name, check_kind, select_models, write_archive
from sync.generic import NulledReferences
from sync.jobs.lifecycle import claim, executing, finish, load_job, mark_stale_jobs
from sync.jobs.reporter import JobReporter
from sync.locking import write_transaction
from sync.models import BackupRecord, Job, SyncState
from sync.schema import SyncModel, plan_models
from sync.storage import ArchiveDestination


@dataclass
class ExportResult:
    name: str  # in the storage (or in the --output folder)
    path: Path | None  # the archive's local path, None in a remote storage
    backup: BackupRecord
    counts: dict[str, int] = field(default_factory=dict)
    # Per table: generic references that named no row, written as null (see sync.generic)
    nulled: dict[str, NulledReferences] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def location(self) -> str:
        """Where the archive is, for a person: its local path, else its name in the storage."""
        return str(self.path) if self.path is not None else self.name


def start_export(
    tables: Iterable[str] | None = None,
    kind: str = "full",
    exclude: Iterable[str] | None = None,
    with_dependencies: bool = False,
    compression: str = "gz",
    level: int | None = None,
    output_dir: Path | str | None = None,
    using: str = "default",
    include_secrets: bool = False,
    started_by: str = "",
    user=None,
    task_id: str = "",
    selection: dict[str, list] | None = None,
) -> BackupRecord:
    """Record an export to be done (queued), with the tables resolved: everything
    ``execute_export`` needs is on the row (``selection``: only these primary keys per model
    label, see ``start_selected_export``). Bad options are refused before any row exists."""
    check_compression(compression, level)
    check_kind(kind)
    chosen = select_models(tables, exclude, with_dependencies)
    plans = plan_models(chosen, include_secrets)  # refuses a model that cannot be keyed
    mark_stale_jobs(using)
    return BackupRecord.objects.using(using).create(
        kind=kind,
        tables=[plan.label for plan in plans],
        compression=compression,
        level=level,
        output_dir=str(output_dir or ""),
        include_secrets=include_secrets,
        format_version=FORMAT_VERSION,
        database=using,
        started_by=started_by,
        user=user,
        task_id=task_id,
        selection=selection or {},
    )


def execute_export(
    backup_id: int,
    using: str = "default",
    reporter: JobReporter | None = None,
    table_filter: TableFilter | None = None,
) -> ExportResult:
    """Write the archive of the queued export ``backup_id`` of database ``using``, each table's
    rows narrowed by ``table_filter`` if given (``sync.exporter.TableFilter``).

    On any failure, or a cancel (JobCancelled), no archive appears under its final name and
    the record says why."""
    backup = load_job(BackupRecord, backup_id, using)
    reporter = reporter or JobReporter()
    if table_filter is None and backup.selection:
        table_filter = selected_rows_filter(backup.selection)
    claim(backup)
    with executing(backup, reporter, "no archive was written"):
        destination = ArchiveDestination.for_export(backup.output_dir)
        with destination.work_dir() as work_dir:
            if not destination.is_local:  # alive while the complete archive uploads, too
                reporter.keep_fresh(lambda: [work_dir])
            remove_leftovers(
                destination.leftovers_dir, older_than=sync_settings.SYNC_JOB_STALE_AFTER
            )
            name = destination.first_name(
                archive_name(backup.kind, backup.compression, backup.started_at)
            )
            backup.file_name, backup.storage_path = name, destination.recorded(name)
            backup.backup_id = uuid.uuid4()
            backup.save(using=using, update_fields=["file_name", "storage_path", "backup_id"])
            written = write_archive(backup, work_dir / name, reporter, table_filter)
            if not destination.is_local:
                reporter.phase("uploading")
            name = destination.publish(written.archive.path)
    archive = written.archive
    finish(
        backup,
        Job.Status.SUCCEEDED,
        progress=reporter.snapshot(),
        file_name=name,
        storage_path=destination.recorded(name),
        counts=written.counts,
        total_records=sum(written.counts.values()),
        size=archive.size,
        sha256=archive.sha256,
    )
    with write_transaction(using):
        SyncState.objects.using(using).update_or_create(
            database=using, defaults={"last_export_at": backup.finished_at}
        )
    path = destination.local_path(name)
    return ExportResult(name, path, backup, backup.counts, written.nulled)


def start_selected_export(
    model: type[models.Model],
    pks: Iterable,
    with_references: bool = False,
    using: str = "default",
    **options: Any,
) -> BackupRecord:
    """Record an export (queued) of the rows ``pks`` of ``model`` only — with the rows they
    reference, directly or not, when ``with_references`` — as an archive ``syncimport`` reads.
    The selection is kept on the job's row, so a worker can execute it (options: see
    ``start_export``)."""
    selection = {model: set(pks)}
    if with_references:
        selection = referenced_rows(selection, using)
    return start_export(
        tables=[m._meta.label for m in selection],
        kind="selected",
        using=using,
        selection={m._meta.label: storable_keys(keys) for m, keys in selection.items()},
        **options,
    )


def storable_keys(keys: Iterable) -> list:
    """Primary keys as the job's JSON can hold them: numbers and texts as they are, others
    (UUIDs…) as text, which the database reads back the same."""
    return [key if isinstance(key, int | str) else str(key) for key in sorted(keys)]


def referenced_rows(
    selection: dict[type[models.Model], set], using: str = "default"
) -> dict[type[models.Model], set]:
    """``selection`` (model → primary keys) with the rows those rows reference through foreign
    keys and many-to-many fields, directly or not. Generic references are left out: an import
    finds their rows by key or drops them (``--drop-unresolved``)."""
    result = {model: set(keys) for model, keys in selection.items()}
    todo = list(result)
    while todo:
        model = todo.pop()
        rows = model._base_manager.using(using).filter(pk__in=result[model])
        for f in [*model._meta.concrete_fields, *model._meta.local_many_to_many]:
            target = f.related_model if f.is_relation else None
            if target is None or target is models.Model or isinstance(target, str):
                continue
            found = set(
                rows.exclude(**{f"{f.name}__isnull": True}).values_list(f"{f.name}__pk", flat=True)
            )
            new = found - result.get(target, set())
            if new:
                result.setdefault(target, set()).update(new)
                todo.append(target)
    return result


def selected_rows_filter(selection: dict[str, list]) -> TableFilter:
    """The table filter of an export of selected rows: a table's rows narrowed to the primary
    keys ``selection`` lists for it."""

    def only_selected(plan: SyncModel, rows: models.QuerySet) -> models.QuerySet:
        return rows.filter(pk__in=selection.get(plan.label, []))

    return only_selected


def export(
    *,
    reporter: JobReporter | None = None,
    table_filter: TableFilter | None = None,
    **options: Any,
) -> ExportResult:
    """Create and execute an export at once, as the commands do (options: see
    ``start_export``)."""
    backup = start_export(**options)
    return execute_export(backup.pk, backup.database, reporter, table_filter)
