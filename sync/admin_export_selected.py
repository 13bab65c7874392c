"""Export selected: an action on the changelist of every registered model the engine can sync
(the content models, and any other the project registers), exporting the selected records —
with the records they reference, when asked on the confirmation page — as an archive
``syncimport`` reads. The engine's part is ``sync.jobs.exports.start_selected_export``.

Added to each registered ModelAdmin when the app is ready (``SyncConfig.ready``), after the
admin modules were loaded: a project's own ModelAdmins get it without inheriting a mixin.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin import helpers
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from sync.admin_common import run_and_follow, runs_inline
from sync.admin_forms import ExportSelectedForm
from sync.admin_perms import RUN_EXPORT, require_permission
from sync.errors import SyncError
from sync.jobs.exports import referenced_rows, start_selected_export
from sync.schema import syncable_models


def install_export_selected(site: admin.AdminSite | None = None) -> None:
    """Add the action to every ModelAdmin of ``site`` whose model the engine can sync (the
    sync app's own records excepted). ModelAdmins with actions switched off stay so."""
    from django.contrib.admin import autodiscover

    autodiscover()  # the admin modules of apps listed after this one, registered now
    site = site or admin.site
    syncable = set(syncable_models())
    for model, model_admin in site._registry.items():
        if model in syncable and model._meta.app_label != "sync":
            add_export_selected(model_admin)


def add_export_selected(model_admin: admin.ModelAdmin) -> None:
    if model_admin.actions is None or export_selected in model_admin.actions:
        return
    model_admin.actions = [*model_admin.actions, export_selected]
    # The action's permission hook (ModelAdmin.has_<name>_permission), on this instance: the
    # action shows only to users who may export.
    model_admin.has_sync_export_permission = can_export


def can_export(request: HttpRequest) -> bool:
    return request.user.has_perm(RUN_EXPORT)


@admin.action(description="Export selected %(verbose_name_plural)s…", permissions=["sync_export"])
def export_selected(model_admin, request: HttpRequest, queryset) -> HttpResponse | None:
    require_permission(request, RUN_EXPORT)
    model = queryset.model
    pks = list(queryset.values_list("pk", flat=True))
    form = ExportSelectedForm(request.POST if request.POST.get("post") else None)
    if form.is_bound and form.is_valid():
        try:
            backup = start_selected_export(
                model,
                pks,
                with_references=form.cleaned_data["with_references"],
                started_by="admin",
                user=request.user,
            )
        except SyncError as exc:
            model_admin.message_user(request, str(exc), level="ERROR")
            return None
        return run_and_follow(backup)
    added = referenced_rows({model: set(pks)})
    referenced = [
        (other._meta.label, len(keys)) for other, keys in added.items() if other is not model
    ]
    opts = model._meta
    return TemplateResponse(
        request,
        "admin/sync/export_selected.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": f"Export selected {opts.verbose_name_plural}",
            "opts": opts,
            "queryset": queryset,
            "count": len(pks),
            "referenced": sorted(referenced),
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "runs_inline": runs_inline(),
        },
    )
