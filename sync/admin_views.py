"""The backups' pages: New export, Upload archive, Verify and Download. Each translates the
request, calls the engine (``sync.jobs.exports``, ``sync.jobs.dispatch``, ``sync.backups``)
and reports; each checks its permission."""

from __future__ import annotations

from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.http import require_POST

from sync.admin_common import render_page, run_and_follow
from sync.admin_forms import NewExportForm, UploadForm, too_large
from sync.admin_perms import (
    DOWNLOAD_BACKUP,
    RUN_EXPORT,
    UPLOAD_BACKUP,
    VIEW_BACKUPS,
    permission_required,
)
from sync.archive import COPY_BUFFER, ArchiveError
from sync.backups import BackupError, open_archive, record_upload, verify_backup
from sync.conf import sync_settings
from sync.errors import SyncError
from sync.exporter import select_models
from sync.jobs.exports import start_export
from sync.models import BackupRecord

CHANGELIST = "admin:sync_backuprecord_changelist"
# A request body this much larger than the upload limit is refused before it is read: the
# multipart framing around the file is far smaller.
UPLOAD_FRAMING = 1024 * 1024


@permission_required(RUN_EXPORT)
def new_export(request: HttpRequest, model_admin) -> HttpResponse:
    form = NewExportForm(request.POST or None)
    added: list = []
    if request.method == "POST" and form.is_valid():
        tables = form.cleaned_data["tables"]
        with_dependencies = form.cleaned_data["with_dependencies"]
        try:
            chosen = select_models(tables)
            taken = select_models(tables, dependencies=with_dependencies)
        except SyncError as exc:
            form.add_error("tables", str(exc))
        else:
            added = [model for model in taken if model not in chosen]
            shown = ",".join(sorted(model._meta.label for model in taken))
            if not added or form.cleaned_data["confirmed"] == shown:
                return start(request, model_admin, tables, form.cleaned_data)
            form.data = form.data.copy()
            form.data["confirmed"] = shown
    return render_page(
        request, model_admin, "admin/sync/new_export.html", "New export", form=form,
        added=[(m._meta.label, m._base_manager.count()) for m in added],
    )  # fmt: skip


def start(request: HttpRequest, model_admin, tables: list[str], options: dict) -> HttpResponse:
    """Start the export job and have it done (``dispatch``: here and now without a broker),
    then show its page."""
    try:
        backup = start_export(
            tables=tables,
            with_dependencies=options["with_dependencies"],
            compression=options["compression"],
            started_by="admin",
            user=request.user,
        )
    except SyncError as exc:
        model_admin.message_user(request, str(exc), messages.ERROR)
        return HttpResponseRedirect(request.path)
    return run_and_follow(backup)


@permission_required(UPLOAD_BACKUP)
def upload(request: HttpRequest, model_admin) -> HttpResponse:
    limit = sync_settings.SYNC_UPLOAD_MAX_SIZE
    if request.method == "POST" and int(request.META.get("CONTENT_LENGTH") or 0) > (
        limit + UPLOAD_FRAMING
    ):
        form = UploadForm()  # the body is left unread
        form.errors["archive"] = form.error_class([too_large(limit)])
    else:
        form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        archive = form.cleaned_data["archive"]
        try:
            backup = record_upload(archive, archive.name, user=request.user)
        except (ArchiveError, BackupError) as exc:
            form.add_error("archive", str(exc))
        else:
            model_admin.message_user(
                request, f"{backup.file_name}: verified and recorded.", messages.SUCCESS
            )
            return HttpResponseRedirect(reverse(CHANGELIST))
    return render_page(
        request, model_admin, "admin/sync/upload.html", "Upload archive", form=form, limit=limit
    )


def verify_line(backup: BackupRecord) -> tuple[int, str]:
    """The message level and the one line ``syncverify`` gives for the backup's archive."""
    try:
        report = verify_backup(backup)
    except ArchiveError as exc:
        return messages.ERROR, f"{backup.file_name}: {exc}"
    except BackupError as exc:
        return messages.ERROR, str(exc)
    return messages.SUCCESS, report.summary(backup.file_name)


@require_POST
@permission_required(VIEW_BACKUPS)
def verify(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    backup = get_object_or_404(BackupRecord, pk=pk)
    level, line = verify_line(backup)
    model_admin.message_user(request, line, level)
    return HttpResponseRedirect(reverse(CHANGELIST))


@permission_required(DOWNLOAD_BACKUP)
def download(request: HttpRequest, model_admin, pk: int) -> HttpResponse:
    backup = get_object_or_404(BackupRecord, pk=pk)
    try:
        archive = open_archive(backup)
    except BackupError as exc:
        raise Http404(str(exc)) from exc
    response = ArchiveResponse(archive, as_attachment=True, filename=backup.file_name)
    if backup.size:
        response["Content-Length"] = str(backup.size)
    return response


class ArchiveResponse(FileResponse):
    """Streamed in blocks, never read whole into memory; Django's 4 KiB blocks would be many
    small reads from S3."""

    block_size = COPY_BUFFER
