"""The sync app's own state: backups written, imports run, and where syncing stands."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Job(models.Model):
    """What exports and imports share: one lifecycle, who started it, when, how it ended.

    queued → running → succeeded | failed | cancelled. A running job whose heartbeat stopped
    is *stale* (see ``sync.jobs.lifecycle``); it is marked failed when the next job starts.
    Progress and the heartbeat live in the sync cache while the job runs (another process can
    read them while an import's transaction is open); ``progress`` keeps the last of it.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    # Names the job's entries (progress, heartbeat, cancel flag) in the sync cache: unique
    # across databases and hosts, unlike the row's id.
    token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    database = models.CharField(max_length=100, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who started it, when a signed-in user did (the admin).",
    )
    started_by = models.CharField(
        max_length=255, blank=True, help_text="Who or what started it, otherwise."
    )
    task_id = models.CharField(max_length=255, blank=True, help_text="Celery task id.")
    hostname = models.CharField(max_length=255, blank=True, help_text="Where it ran.")
    pid = models.IntegerField(null=True, blank=True, help_text="The process that ran it.")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    progress = models.JSONField(default=dict, blank=True, help_text="The last progress seen.")
    error = models.TextField(blank=True)
    error_detail = models.JSONField(
        default=dict, blank=True, help_text="The error's structure (reason, table, key, field)."
    )

    KIND = ""  # "export" or "import": with the id, the name users give (export-12)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def label(self) -> str:
        return f"{self.KIND}-{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def is_stale(self) -> bool:
        """Running, but its heartbeat stopped: the process that ran it is gone."""
        from sync.jobs.lifecycle import is_stale

        return is_stale(self)

    @property
    def who(self) -> str:
        return str(self.user) if self.user_id else self.started_by


FINISHED = (Job.Status.SUCCEEDED, Job.Status.FAILED, Job.Status.CANCELLED)


class BackupRecord(Job):
    """An export job and the archive it wrote."""

    KIND = "export"

    file_name = models.CharField(max_length=255, blank=True)
    storage_path = models.CharField(max_length=1024, blank=True)
    output_dir = models.CharField(
        max_length=1024, blank=True, help_text="Where to write (empty: BACKUP_DIR)."
    )
    backup_id = models.UUIDField(null=True, blank=True, unique=True)
    kind = models.CharField(max_length=20, default="full")
    tables = models.JSONField(default=list, blank=True)
    selection = models.JSONField(
        default=dict,
        blank=True,
        help_text="Only these rows, when set: model label → primary keys (Export selected).",
    )
    include_secrets = models.BooleanField(default=False)
    counts = models.JSONField(default=dict, blank=True, help_text="Records per table.")
    total_records = models.BigIntegerField(default=0)
    size = models.BigIntegerField(default=0, help_text="Archive size in bytes.")
    sha256 = models.CharField(max_length=64, blank=True)
    compression = models.CharField(max_length=10, blank=True)
    level = models.SmallIntegerField(null=True, blank=True, help_text="Compression level.")
    format_version = models.PositiveSmallIntegerField(null=True, blank=True)
    # Rotation (sync.rotation) deletes the archive and keeps the record, saying when and why.
    deleted_at = models.DateTimeField(
        null=True, blank=True, help_text="When rotation deleted the archive."
    )
    deleted_reason = models.CharField(
        max_length=255, blank=True, help_text="The rule that deleted it (docs/rotation.md)."
    )
    missing_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When syncinspect --reconcile --fix found its archive gone from the storage.",
    )

    class Meta(Job.Meta):
        # The admin's pages and actions check these; the view permission shows the list.
        permissions = [
            ("run_export", "Can start an export"),
            ("download_backup", "Can download a backup archive"),
            ("upload_backup", "Can upload a backup archive"),
        ]

    def __str__(self) -> str:
        return self.file_name or f"backup #{self.pk}"


class ImportRun(Job):
    """An import job (dry runs included): what was asked and what it changed."""

    KIND = "import"

    archive = models.CharField(max_length=1024)
    backup_id = models.UUIDField(null=True, blank=True)
    mode = models.CharField(max_length=10)
    dry_run = models.BooleanField(default=False)
    tables = models.JSONField(default=list, blank=True)
    collect_changes = models.BooleanField(default=False, help_text="List each changed record.")
    drop_unresolved = models.BooleanField(
        default=False, help_text="Leave out records whose generic reference names no row."
    )
    counts = models.JSONField(default=dict, blank=True, help_text="Per-table change counts.")
    applies = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="applied_by",
        help_text="The dry run whose plan this import applies (see docs/plans.md).",
    )

    class Meta(Job.Meta):
        permissions = [("run_import", "Can preview and run an import")]

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


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class WebhookDelivery(models.Model):
    """One event to deliver to one URL, and where its delivery stands (``sync.webhooks``).

    ``payload`` is the JSON text exactly as sent, so that every attempt sends the same bytes
    under the same ``webhook_id`` (the receiver's idempotency key). ``next_attempt_at`` is
    when a worker may try next; a periodic task picks up the deliveries that are due.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending (another attempt is due)"
        DELIVERED = "delivered"
        FAILED = "failed", "failed (attempts used up)"
        GONE = "gone", "gone (the receiver answered 410)"

    webhook_id = models.CharField(
        max_length=64, unique=True, default=new_webhook_id, editable=False
    )
    url = models.URLField(max_length=2048)
    event = models.CharField(max_length=40, help_text="e.g. backup.complete")
    job = models.CharField(max_length=40, blank=True, help_text="The job it tells of: export-12.")
    payload = models.TextField(help_text="The JSON body, as sent.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} to {self.url}"


class WebhookAttempt(models.Model):
    """One POST of a delivery: what the receiver answered, or why there was no answer."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    attempted_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration = models.FloatField(help_text="Seconds until the answer, or the error.")
    response = models.TextField(blank=True, help_text="The start of the receiver's answer.")

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="sync_webhook_attempt_once")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery}"
