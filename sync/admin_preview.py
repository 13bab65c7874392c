"""The admin's Preview import → plan → Confirm flow (docs/admin.md).

The views translate a request into the engine's calls and render what they return: a dry-run
job (``sync.jobs.imports.start_import`` + ``sync.jobs.dispatch.dispatch``), its stored plan read
a page at a time (``sync.plan.Plan``), and an import that applies exactly that plan
(``sync.jobs.plans.apply_options``: the engine checks, before it commits, that the outcome is
the plan's). ``preview_urls(model_admin)`` gives the URLs; a ModelAdmin includes them from its
``get_urls()``. Every view needs ``sync.run_import``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.core.exceptions import FieldDoesNotExist
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_GET, require_POST

from sync.admin_common import render_page, runs_inline
from sync.admin_perms import RUN_IMPORT, require_permission
from sync.backups import BackupError, backup_location
from sync.errors import SyncError
from sync.importer import MODES
from sync.jobs.dispatch import dispatch
from sync.jobs.imports import start_import
from sync.jobs.lifecycle import JobState
from sync.jobs.plans import PlanMismatch, apply_options, mismatch, plan_of
from sync.models import FINISHED, BackupRecord, ImportRun, Job
from sync.plan import Plan, PlanError, dumps

USING = "default"  # the admin's database
PAGE_SIZE = 50
FOLD_CHARS = 200  # a longer value is folded: its start shown, the rest one click away
INLINE_CHARS = 20_000  # a longer one is not put in the page: a link opens it
ENDED = {*FINISHED, "stale"}  # a stale job has ended too: its process is gone
COLUMNS = ["new", "updated", "unchanged", "skipped", "deleted", "cascaded"]


@dataclass(frozen=True)
class Filter:
    """A choice of the plan page's filter by action."""

    label: str
    action: str | None  # the plan's action (None: any)
    changes_only: bool  # leave out the unchanged
    columns: tuple[str, ...]  # the summary's counts it selects


FILTERS = {
    "": Filter("all changes", None, True, ("new", "updated", "skipped", "deleted", "cascaded")),
    "insert": Filter("new", "insert", False, ("new",)),
    "update": Filter("updated", "update", False, ("updated",)),
    "delete": Filter("deleted and cascaded", "delete", False, ("deleted", "cascaded")),
    "skip": Filter("skipped", "skip", False, ("skipped",)),
    "unchanged": Filter("unchanged", "unchanged", False, ("unchanged",)),
    "all": Filter("everything", None, False, (*COLUMNS, "conflicts")),
}
MODE_HELP = {
    "replace": "the chosen tables become the archive's: records it lacks are deleted",
    "update": "records newer in the archive replace ours, new ones are added, none deleted",
    "append": "only records we lack are added",
}


def preview_urls(model_admin: admin.ModelAdmin) -> list[URLPattern]:
    """The flow's URLs (names ``sync_preview*``), to put before the ModelAdmin's own."""
    pages = PreviewPages(model_admin)
    wrap = model_admin.admin_site.admin_view
    return [
        path("preview/", wrap(pages.choose), name="sync_preview_import"),
        path("preview/<int:run_pk>/", wrap(pages.progress), name="sync_preview_progress"),
        path("preview/<int:run_pk>/plan/", wrap(pages.plan), name="sync_preview_plan"),
        path("preview/<int:run_pk>/value/", wrap(pages.value), name="sync_preview_value"),
        path("preview/<int:run_pk>/confirm/", wrap(pages.confirm), name="sync_preview_confirm"),
        path("preview/<int:run_pk>/again/", wrap(pages.again), name="sync_preview_again"),
        path("preview/<int:run_pk>/result/", wrap(pages.result), name="sync_preview_result"),
    ]


def needs_permission(view: Callable) -> Callable:
    """A page of the flow: 403 without ``sync.run_import``."""

    @wraps(view)
    def checked(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        require_permission(request, RUN_IMPORT)
        return view(self, request, *args, **kwargs)

    return checked


class PreviewForm(forms.Form):
    mode = forms.ChoiceField(
        choices=[(mode, f"{mode} — {MODE_HELP[mode]}") for mode in MODES],
        initial="update",
        widget=forms.RadioSelect,
    )
    tables = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None chosen: every table of the archive.",
    )

    def __init__(self, *args, tables: dict[str, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tables"].choices = [
            (label, f"{label} ({count:,} records)") for label, count in tables.items()
        ]


# -- what the plan page shows ------------------------------------------------------------------


@dataclass
class ShownValue:
    """One value of a plan entry as the page shows it: text (escaped by the template), folded
    when long, or only linked when very long."""

    text: str
    kind: str = ""  # "null", "empty" or "" (text)
    head: str = ""  # the start of a folded value
    length: int = 0
    link: str = ""  # where the whole value is, when it is too long for the page

    @property
    def folded(self) -> bool:
        return bool(self.head)


@dataclass
class ShownField:
    name: str
    old: ShownValue | None
    new: ShownValue
    reference: str = ""  # the referenced table (app.Model) when the value is a sync key


@dataclass
class ShownEntry:
    table: str
    action: str
    key: str
    reason: str
    fields: list[ShownField] = field(default_factory=list)

    @property
    def cascaded(self) -> bool:
        return self.action == "delete" and self.reason.startswith("cascade")


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value)


def shown_value(value: Any, link: str) -> ShownValue:
    if value is None:
        return ShownValue("null", kind="null")
    if value == "":
        return ShownValue("empty", kind="empty")
    text = as_text(value)
    if len(text) <= FOLD_CHARS and text.count("\n") < 4:
        return ShownValue(text)
    head = text[:FOLD_CHARS].split("\n")[:4]
    shown = ShownValue(text, head="\n".join(head), length=len(text))
    if len(text) > INLINE_CHARS:
        shown.text, shown.link = "", link
    return shown


def reference_of(table: str, name: str) -> str:
    """The table field ``name`` of ``table`` points at, when it is a reference ("" if not)."""
    try:
        target = apps.get_model(table)._meta.get_field(name).related_model
    except (LookupError, ValueError, FieldDoesNotExist):
        return ""
    return target._meta.label if target is not None else ""


def shown_entry(entry: dict, value_url: Callable[[str, str, str, str], str]) -> ShownEntry:
    """An entry ready for the template; ``value_url(table, key, field, side)`` links a value
    too long for the page."""
    table, key = entry["table"], dumps(entry["key"])
    shown = ShownEntry(table, entry["action"], as_text(entry["key"]), entry.get("reason", ""))
    for name, value in entry["fields"].items():
        reference = reference_of(table, name)
        if entry["action"] == "update" and isinstance(value, dict) and set(value) == {"old", "new"}:
            old = shown_value(value["old"], value_url(table, key, name, "old"))
            new = shown_value(value["new"], value_url(table, key, name, "new"))
        else:
            old, new = None, shown_value(value, value_url(table, key, name, "value"))
        shown.fields.append(ShownField(name, old, new, reference))
    return shown


class PlanPage:
    """One page of a plan's entries, filtered by table and action, and the pages around it.

    Counts come from the plan's per-table summary (one grouped query); the entries of the page
    from the engine's paging: the plan is never read whole."""

    def __init__(self, plan: Plan, table: str, action: str, number: str | None):
        self.summary = plan.summary()
        self.table = table if table in self.summary else ""
        self.action = action if action in FILTERS else ""
        chosen = FILTERS[self.action]
        paginator = Paginator(range(self.count(chosen)), PAGE_SIZE)
        self.page = paginator.get_page(number)
        self.entries = plan.page(
            self.page.number, PAGE_SIZE, self.table or None, chosen.action, chosen.changes_only
        )

    def count(self, chosen: Filter) -> int:
        """How many entries the filter selects, from the summary's counts."""
        tables = [self.summary[self.table]] if self.table else self.summary.values()
        return sum(counts[column] for counts in tables for column in chosen.columns)


@dataclass(frozen=True)
class CountCell:
    count: int
    action: str  # the plan page's filter showing these records


@dataclass(frozen=True)
class CountRow:
    table: str
    cells: list[CountCell]
    total: bool = False


COLUMN_FILTER = {"new": "insert", "updated": "update", "unchanged": "unchanged",
                 "skipped": "skip", "deleted": "delete", "cascaded": "delete"}  # fmt: skip


def count_rows(summary: dict[str, dict[str, int]]) -> list[CountRow]:
    """The counts table: a row per table and one for all of them."""

    def cells(counts: dict[str, int]) -> list[CountCell]:
        return [CountCell(counts[column], COLUMN_FILTER[column]) for column in COLUMNS]

    rows = [CountRow(table, cells(counts)) for table, counts in summary.items()]
    if len(rows) > 1:
        totals = {c: sum(counts[c] for counts in summary.values()) for c in COLUMNS}
        rows.append(CountRow("", cells(totals), total=True))
    return rows


# -- the pages ---------------------------------------------------------------------------------


class PreviewPages:
    def __init__(self, model_admin: admin.ModelAdmin):
        self.model_admin = model_admin
        self.site = model_admin.admin_site

    def url(self, name: str, *args: Any) -> str:
        return reverse(f"{self.site.name}:sync_preview{name}", args=args)

    def render(self, request: HttpRequest, template: str, title: str, **context: Any):
        return render_page(
            request, self.model_admin, f"admin/sync/preview/{template}.html", title, **context
        )

    # 1. choose mode and tables, start the dry run

    @needs_permission
    def choose(self, request: HttpRequest) -> TemplateResponse | HttpResponse:
        """Preview import… of the backup ``?backup=<pk>`` (made here or uploaded)."""
        backups = BackupRecord.objects.using(USING)
        backup = get_object_or_404(backups, pk=request.GET.get("backup") or 0)
        form = PreviewForm(
            request.POST or None, tables=backup.counts or dict.fromkeys(backup.tables, 0)
        )
        try:
            archive = archive_of(backup)
        except SyncError as exc:
            messages.error(request, f"Nothing to preview: {exc}")
            archive = None
        if request.method == "POST" and archive is not None and form.is_valid():
            data = form.cleaned_data
            run = self.start(request, archive, data["mode"], data["tables"])
            return redirect(self.url("_progress", run.pk))
        return self.render(
            request, "choose", f"Preview import of {backup}", backup=backup, form=form,
            archive=archive, opts=BackupRecord._meta,
        )  # fmt: skip

    def start(self, request: HttpRequest, archive: str, mode: str, tables: list[str],
              drop_unresolved: bool = False) -> ImportRun:  # fmt: skip
        """Create the dry run and have it done (inline: it has ended when this returns)."""
        run = start_import(
            archive,
            mode=mode,
            tables=tables,
            dry_run=True,
            collect_changes=True,
            drop_unresolved=drop_unresolved,
            using=USING,
            started_by="admin",
            user=request.user,
        )
        self.dispatch(request, run)
        return run

    def dispatch(self, request: HttpRequest, run: ImportRun) -> None:
        with suppress(SyncError):  # an inline job that failed recorded why: its page shows it
            dispatch(run)
        if runs_inline():
            messages.info(
                request,
                f"{run.label} ran inside this web request: no task broker is configured "
                "(CELERY_BROKER_URL).",
            )

    # 2. progress, polled

    @needs_permission
    def progress(self, request: HttpRequest, run_pk: int) -> HttpResponse:
        """The job's live progress (the Jobs page's JSON endpoint, polled); once it has ended,
        the plan of a dry run that succeeded, else the result."""
        run = self.run(run_pk)
        state = JobState.of(run)
        if state.status in ENDED:
            if run.dry_run and state.status == Job.Status.SUCCEEDED:
                return redirect(self.url("_plan", run.pk))
            return redirect(self.url("_result", run.pk))
        return self.render(
            request, "progress", f"{run.label}: {run.mode} import {kind_of(run)}", run=run,
            state=state.as_dict() | {"progress_text": state.progress_text},
        )  # fmt: skip

    # 3. the plan

    @needs_permission
    def plan(self, request: HttpRequest, run_pk: int) -> HttpResponse:
        run = self.run(run_pk)
        if not run.dry_run:
            return redirect(self.url("_result", run.pk))
        if run.status != Job.Status.SUCCEEDED:
            return redirect(self.url("_progress", run.pk))
        context: dict[str, Any] = {"run": run, "filters": FILTERS, "columns": COLUMNS}
        context["run_url"] = reverse(f"{self.site.name}:sync_importrun_change", args=[run.pk])
        context["applied_by"] = run.applied_by.filter(status=Job.Status.SUCCEEDED).first()
        try:
            plan = Plan(plan_of(run))
        except PlanError as exc:
            messages.error(request, str(exc))
            return self.render(request, "plan", f"Plan of {run.label}", **context)
        try:
            page = PlanPage(
                plan, request.GET.get("table", ""), request.GET.get("action", ""),
                request.GET.get("page"),
            )  # fmt: skip
        finally:
            plan.close()

        def value_url(table: str, key: str, name: str, side: str) -> str:
            query = {"table": table, "key": key, "field": name, "side": side}
            return self.url("_value", run.pk) + "?" + urlencode(query)

        context |= {
            "page": page,
            "entries": [shown_entry(entry, value_url) for entry in page.entries],
            "count_rows": count_rows(page.summary),
        }
        return self.render(request, "plan", f"Plan of {run.label}", **context)

    @needs_permission
    @method_decorator(require_GET)
    def value(self, request: HttpRequest, run_pk: int) -> HttpResponse:
        """One whole value of an entry, as plain text (never as a page)."""
        run = self.run(run_pk)
        table, name, side = (request.GET.get(p, "") for p in ("table", "field", "side"))
        try:
            key = json.loads(request.GET.get("key", ""))
            plan = Plan(plan_of(run))
        except (ValueError, PlanError) as exc:
            raise Http404(str(exc)) from exc
        try:
            entry = plan.entry(table, key)
        finally:
            plan.close()
        if entry is None or name not in entry["fields"]:
            raise Http404("No such record or field in this plan.")
        value = entry["fields"][name]
        if side in ("old", "new") and isinstance(value, dict):
            value = value.get(side)
        response = HttpResponse(as_text(value), content_type="text/plain; charset=utf-8")
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Disposition"] = "inline"
        return response

    # 4. confirm: apply exactly that plan

    @needs_permission
    @method_decorator(require_POST)
    def confirm(self, request: HttpRequest, run_pk: int) -> HttpResponse:
        preview = self.run(run_pk)
        try:
            options = apply_options(preview.label, USING)
        except SyncError as exc:
            messages.error(request, str(exc))
            return redirect(self.url("_plan", preview.pk))
        run = start_import(**options, started_by="admin", user=request.user)
        self.dispatch(request, run)
        return redirect(self.url("_progress", run.pk))

    @needs_permission
    @method_decorator(require_POST)
    def again(self, request: HttpRequest, run_pk: int) -> HttpResponse:
        """A new preview of the same archive, mode and tables (the database changed)."""
        earlier = self.run(run_pk)
        earlier = earlier.applies or earlier
        run = self.start(
            request, earlier.archive, earlier.mode, earlier.tables, earlier.drop_unresolved
        )
        return redirect(self.url("_progress", run.pk))

    # 5. the result

    @needs_permission
    def result(self, request: HttpRequest, run_pk: int) -> HttpResponse:
        run = self.run(run_pk)
        state = JobState.of(run)
        if state.status not in ENDED:
            return redirect(self.url("_progress", run.pk))
        summary, differs = outcome(run)
        return self.render(
            request, "result", f"{run.label}: {run.mode} import {kind_of(run)}", run=run,
            state=state, count_rows=count_rows(summary), columns=COLUMNS, differs=differs,
            run_url=reverse(f"{self.site.name}:sync_importrun_change", args=[run.pk]),
        )  # fmt: skip

    def run(self, run_pk: int) -> ImportRun:
        return get_object_or_404(
            ImportRun.objects.using(USING).select_related("applies"), pk=run_pk
        )


def archive_of(backup: BackupRecord) -> str:
    """What the import job of ``backup``'s archive names: its local path, else its name in the
    archive storage; BackupError when there is none."""
    location = backup_location(backup)
    if location.path is None:
        return location.text
    if not location.path.is_file():
        raise BackupError(f"{backup.file_name} is gone: no file at {location.path}.")
    return str(location.path)


def kind_of(run: ImportRun) -> str:
    if run.dry_run:
        return "preview (dry run)"
    return f"applying {run.applies.label}'s plan" if run.applies_id else ""


def outcome(run: ImportRun) -> tuple[dict[str, dict[str, int]], PlanMismatch | None]:
    """What ``run`` did per table (from its plan when it stored one), and, for an import that
    applied a plan and was refused, where it differed from it."""
    try:
        plan = Plan(plan_of(run))
    except PlanError:
        return {}, None
    try:
        summary = plan.summary() if run.status == Job.Status.SUCCEEDED or run.dry_run else {}
    finally:
        plan.close()
    differs = None
    if run.applies_id and run.status == Job.Status.FAILED:
        try:
            differs = mismatch(run)
        except (PlanError, KeyError):
            differs = None
    return summary, differs
