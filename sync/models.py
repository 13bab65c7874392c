"""The sync app's own state: backups written, imports run, and where syncing stands."""

import os
import socket

from django.db import models
from django.utils import timezone


def process_alive(hostname: str, pid: int | None) -> bool:
    """Whether process ``pid`` on ``hostname`` still runs (other hosts: assume it does)."""
    if pid is None or hostname != socket.gethostname():
        return pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ProcessRun:
    """What BackupRecord and ImportRun share: work done by one process (``pid`` on
    ``hostname``), ``status`` 'running' until that process records how it ended."""

    @property
    def is_stale(self) -> bool:
        """Still 'running', but the process that ran it on this host is gone."""
        return self.status == self.Status.RUNNING and not process_alive(self.hostname, self.pid)


def mark_stale(runs: models.QuerySet, error: str) -> int:
    """Mark as failed, with ``error``, the ``runs`` left 'running' by a process on this host
    that is gone; return how many."""
    status = runs.model.Status
    running = runs.filter(status=status.RUNNING, hostname=socket.gethostname())
    stale = [run.pk for run in running.only("status", "pid", "hostname") if run.is_stale]
    if not stale:
        return 0
    return runs.filter(pk__in=stale, status=status.RUNNING).update(
        status=status.FAILED, error=error, finished_at=timezone.now()
    )


class BackupRecord(ProcessRun, models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    file_name = models.CharField(max_length=255, blank=True)
    storage_path = models.CharField(max_length=1024, blank=True)
    backup_id = models.UUIDField(null=True, blank=True, unique=True)
    kind = models.CharField(max_length=20, default="full")
    tables = models.JSONField(default=list, blank=True)
    counts = models.JSONField(default=dict, blank=True, help_text="Records per table.")
    total_records = models.BigIntegerField(default=0)
    size = models.BigIntegerField(default=0, help_text="Archive size in bytes.")
    sha256 = models.CharField(max_length=64, blank=True)
    compression = models.CharField(max_length=10, blank=True)
    format_version = models.PositiveSmallIntegerField(null=True, blank=True)
    database = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)
    pid = models.IntegerField(null=True, blank=True, help_text="Process that wrote it.")
    hostname = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.file_name or f"backup #{self.pk}"


class ImportRun(ProcessRun, models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        REFUSED = "refused"

    archive = models.CharField(max_length=1024)
    backup_id = models.UUIDField(null=True, blank=True)
    mode = models.CharField(max_length=10)
    dry_run = models.BooleanField(default=False)
    tables = models.JSONField(default=list, blank=True)
    counts = models.JSONField(default=dict, blank=True, help_text="Per-table change counts.")
    database = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)
    started_by = models.CharField(max_length=255, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.mode} import of {self.archive}"


class SyncState(models.Model):
    """One row per database alias: where exporting and importing stand."""

    database = models.CharField(max_length=100, unique=True, default="default")
    last_export_at = models.DateTimeField(null=True, blank=True)
    last_import_at = models.DateTimeField(null=True, blank=True)
    last_sync_id = models.UUIDField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sync state of {self.database}"
