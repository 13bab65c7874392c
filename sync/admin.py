from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html

from sync.archive import COPY_BUFFER, ArchiveError
from sync.models import BackupRecord, ImportRun, Job, SyncState
from sync.storage import recorded_location


class ArchiveResponse(FileResponse):
    block_size = COPY_BUFFER  # Django's 4 KiB blocks would be many small reads from S3


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the engine: visible in the admin, never edited by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class JobAdmin(ReadOnlyAdmin):
    @admin.display(description="status")
    def state(self, obj: Job) -> str:
        return "stale (its process is gone)" if obj.is_stale else obj.status


@admin.register(BackupRecord)
class BackupRecordAdmin(JobAdmin):
    list_display = ["file_name", "kind", "state", "total_records", "size", "compression",
                    "who", "created_at", "finished_at", "download"]  # fmt: skip
    list_filter = ["status", "kind", "compression"]
    search_fields = ["file_name", "sha256"]

    @admin.display(description="archive")
    def download(self, obj: BackupRecord) -> str:
        if obj.status != Job.Status.SUCCEEDED or not obj.storage_path or obj.missing_since:
            return "—"
        url = reverse("admin:sync_backuprecord_download", args=[obj.pk])
        return format_html('<a href="{}">download</a>', url)

    def get_urls(self) -> list:
        download = self.admin_site.admin_view(self.download_view)
        return [
            path("<int:pk>/download/", download, name="sync_backuprecord_download"),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, pk: int) -> FileResponse:
        """The archive, streamed from the archive storage in chunks (never read whole)."""
        record = BackupRecord.objects.filter(pk=pk).first()
        if not self.has_view_permission(request, record):
            raise PermissionDenied
        if record is None or not record.storage_path:
            raise Http404("No such backup archive.")
        try:
            stream = recorded_location(record.storage_path).open()
        except ArchiveError as exc:
            raise Http404(str(exc)) from exc
        response = ArchiveResponse(stream, as_attachment=True, filename=record.file_name)
        if record.size:
            response["Content-Length"] = str(record.size)
        return response


@admin.register(ImportRun)
class ImportRunAdmin(JobAdmin):
    list_display = ["archive", "mode", "dry_run", "state", "who", "created_at",
                    "finished_at"]  # fmt: skip
    list_filter = ["status", "mode", "dry_run"]
    search_fields = ["archive", "error"]


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ["database", "last_export_at", "last_import_at", "last_sync_id"]


from sync import admin_webhooks  # noqa: E402, F401 - registers the webhook deliveries
