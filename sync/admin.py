from django.contrib import admin

from sync.admin_preview import preview_urls
from sync.models import BackupRecord, ImportRun, Job, SyncState


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
                    "who", "created_at", "finished_at"]  # fmt: skip
    list_filter = ["status", "kind", "compression"]
    search_fields = ["file_name", "sha256"]

    def get_urls(self):
        return preview_urls(self) + super().get_urls()


@admin.register(ImportRun)
class ImportRunAdmin(JobAdmin):
    list_display = ["archive", "mode", "dry_run", "state", "who", "created_at",
                    "finished_at"]  # fmt: skip
    list_filter = ["status", "mode", "dry_run"]
    search_fields = ["archive", "error"]


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ["database", "last_export_at", "last_import_at", "last_sync_id"]
