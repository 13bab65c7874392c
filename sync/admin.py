"""The sync app in the Django admin: backups, import runs and sync state as lists, with the
pages and actions of an operator (new export, upload, verify, download, jobs with live
progress, export of selected records). Pages live in ``sync.admin_*`` modules and get their
URLs here, from ``get_urls()``, wrapped in ``admin_site.admin_view``; each checks one of the
app's permissions (``sync.admin_perms``). Templates: ``templates/admin/sync/``."""

from __future__ import annotations

import importlib.util
from functools import update_wrapper

from django.contrib import admin
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from sync import admin_jobs, admin_views
from sync.admin_perms import DOWNLOAD_BACKUP, RUN_EXPORT, UPLOAD_BACKUP
from sync.jobs.lifecycle import JobState
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
    @admin.display(description="status", ordering="status")
    def state(self, obj: Job) -> str:
        job = JobState.of(obj)
        if job.status == Job.Status.RUNNING:
            bar = (
                format_html('<progress value="{}" max="{}"></progress>', job.done, job.total)
                if job.total
                else mark_safe("<progress></progress>")  # no total yet: an indefinite bar
            )
            return format_html("running {} {}", bar, job.progress_text)
        if job.status == "stale":
            return "stale (its process is gone)"
        return job.status

    def view(self, view):
        """A URL's view ``view(request, model_admin, ...)``, behind the admin's login (a
        signed-out user goes to the login page; the view itself checks its permission)."""

        def with_model_admin(request, *args, **kwargs):
            return view(request, self, *args, **kwargs)

        return self.admin_site.admin_view(update_wrapper(with_model_admin, view))


@admin.register(BackupRecord)
class BackupRecordAdmin(JobAdmin):
    list_display = ["file_name", "state", "kind", "table_count", "total_records", "size_shown",
                    "compression", "created_at", "who", "buttons"]  # fmt: skip
    list_filter = ["status", "kind", "compression", "created_at"]
    search_fields = ["file_name", "sha256", "started_by", "user__sysmail", "tables"]
    actions = ["verify_selected"]
    change_list_template = "admin/sync/backuprecord/change_list.html"

    def get_urls(self):
        info = "sync_backuprecord"
        urls = [
            path("new-export/", self.view(admin_views.new_export), name=f"{info}_new"),
            path("upload/", self.view(admin_views.upload), name=f"{info}_upload"),
            path("<int:pk>/verify/", self.view(admin_views.verify), name=f"{info}_verify"),
            path("<int:pk>/download/", self.view(admin_views.download), name=f"{info}_download"),
            path("jobs/", self.view(admin_jobs.jobs), name="sync_jobs"),
            path("jobs/state.json", self.view(admin_jobs.states), name="sync_job_states"),
            path("jobs/<str:name>/", self.view(admin_jobs.job), name="sync_job"),
            path("jobs/<str:name>/state.json", self.view(admin_jobs.state), name="sync_job_state"),
            path("jobs/<str:name>/cancel/", self.view(admin_jobs.cancel), name="sync_job_cancel"),
        ]
        return urls + super().get_urls()

    @admin.display(description="tables")
    def table_count(self, obj: BackupRecord) -> int:
        return len(obj.tables)

    @admin.display(description="size", ordering="size")
    def size_shown(self, obj: BackupRecord) -> str:
        from django.template.defaultfilters import filesizeformat

        return filesizeformat(obj.size) if obj.size else "—"

    @admin.display(description="")
    def buttons(self, obj: BackupRecord) -> str:
        """Verify (posts the changelist's form, with its CSRF token, to the verify page),
        Download and Preview import… of a finished archive."""
        if obj.status != Job.Status.SUCCEEDED or not obj.storage_path or obj.missing_since:
            return ""  # no archive (any more): syncinspect --reconcile --fix found it gone
        parts = [
            format_html(
                '<button type="submit" class="button" formaction="{}" name="verify">Verify'
                "</button>",
                reverse("admin:sync_backuprecord_verify", args=[obj.pk]),
            ),
            format_html(
                '<a class="button" href="{}">Download</a>',
                reverse("admin:sync_backuprecord_download", args=[obj.pk]),
            ),
        ]
        preview = preview_url(obj)
        if preview:
            parts.append(format_html('<a class="button" href="{}">Preview import…</a>', preview))
        return mark_safe(" ".join(parts))  # each part escaped by format_html

    def changelist_view(self, request, extra_context=None):
        user = request.user
        extra = {
            "can_run_export": user.has_perm(RUN_EXPORT),
            "can_upload": user.has_perm(UPLOAD_BACKUP),
            "can_download": user.has_perm(DOWNLOAD_BACKUP),
            "beat_schedules_url": admin_jobs.beat_schedules_url(),
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    @admin.action(description="Verify the selected archives", permissions=["verify"])
    def verify_selected(self, request, queryset):
        for backup in queryset:
            level, line = admin_views.verify_line(backup)
            self.message_user(request, line, level)

    def has_verify_permission(self, request) -> bool:
        return request.user.has_perm(DOWNLOAD_BACKUP)


def preview_url(backup: BackupRecord) -> str:
    """The Preview import… page of ``backup`` (sync/admin_preview.py), if it is installed."""
    try:
        return reverse("admin:sync_preview_import") + f"?backup={backup.pk}"
    except NoReverseMatch:
        return ""


@admin.register(ImportRun)
class ImportRunAdmin(JobAdmin):
    list_display = ["archive", "mode", "dry_run", "state", "who", "created_at",
                    "finished_at"]  # fmt: skip
    list_filter = ["status", "mode", "dry_run"]
    search_fields = ["archive", "error"]

    def get_urls(self):
        urls = super().get_urls()
        # The Preview import → plan → Confirm pages (sync/admin_preview.py, written beside this
        # module): ``preview_urls(model_admin) -> list[path]``; the "Preview import…" button of
        # a backup links to the URL named "admin:sync_preview_import" (?backup=<pk>).
        if importlib.util.find_spec("sync.admin_preview") is None:
            return urls
        from sync.admin_preview import preview_urls

        return preview_urls(self) + urls


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ["database", "last_export_at", "last_import_at", "last_sync_id"]


from sync import admin_webhooks  # noqa: E402, F401 - registers the webhook deliveries
