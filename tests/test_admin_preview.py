"""The admin's Preview import → plan → Confirm pages (sync/admin_preview.py), through Django's
test client: each page and action, its permission, and what it changes."""

import re
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files import File
from django.db.models import F
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from crearis.content.models import Event, Project, Status
from sync import admin_preview
from sync.backups import record_upload
from sync.jobs.exports import export
from sync.jobs.imports import start_import
from sync.jobs.plans import plan_of
from sync.models import BackupRecord, ImportRun
from sync.plan import Plan, PlanRecorder
from tests.browser import staff_user
from tests.fingerprint import fingerprint

pytestmark = pytest.mark.django_db

PROJECT = "proj00000"


def staff_client(*permissions: str, name: str = "operator") -> Client:
    client = Client()
    client.force_login(staff_user(*permissions, name=name))
    return client


@pytest.fixture
def operator(demo) -> Client:
    """A staff user allowed to run imports and to see them (the progress page polls the Jobs
    page's endpoint), nothing else."""
    return staff_client("sync.run_import", "sync.view_importrun")


@pytest.fixture
def backup(demo, tmp_path) -> BackupRecord:
    """A backup of the demo site, and the site gone back to an older name of one project: the
    archive is newer there (what an update-mode import brings)."""
    record = export(output_dir=tmp_path, compression="none").backup
    make_older(PROJECT, "an older name")
    return record


def make_older(domaincode: str, name: str, **fields) -> None:
    older = F("updated_at") - timedelta(days=1)
    Project.objects.filter(domaincode=domaincode).update(name=name, updated_at=older, **fields)


def url(name: str, *args) -> str:
    return reverse(f"admin:sync_preview{name}", args=args)


def choose_url(backup: BackupRecord) -> str:
    return url("_import") + f"?backup={backup.pk}"


def preview(client: Client, backup: BackupRecord, mode: str = "update", tables=()) -> ImportRun:
    response = client.post(choose_url(backup), {"mode": mode, "tables": list(tables)})
    run = ImportRun.objects.latest("pk")
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == url("_progress", run.pk)
    return run


def test_the_preview_form_offers_the_modes_and_the_archives_tables(operator, backup):
    response = operator.get(choose_url(backup))
    page = response.content.decode()
    assert response.status_code == 200
    assert "admin/sync/preview/choose.html" in [t.name for t in response.templates]
    for mode in ("replace", "update", "append"):
        assert f'value="{mode}"' in page
    assert "content.Project (" in page and 'name="csrfmiddlewaretoken"' in page
    assert 'class="breadcrumbs"' in page and backup.file_name in page


def test_preview_runs_a_dry_run_that_changes_nothing_and_leads_to_the_plan(operator, backup):
    before = fingerprint()
    run = preview(operator, backup)
    run.refresh_from_db()
    assert (run.dry_run, run.mode, run.status) == (True, "update", "succeeded")
    assert run.user.sysmail.startswith("operator")
    assert fingerprint() == before
    progress = operator.get(url("_progress", run.pk), follow=True)
    assert progress.redirect_chain == [(url("_plan", run.pk), 302)]
    page = progress.content.decode()
    assert "ran inside this web request: no task broker is configured" in page
    assert 'id="confirm"' in page


def test_the_plan_shows_counts_and_each_changed_field_old_and_new(operator, backup):
    run = preview(operator, backup)
    response = operator.get(url("_plan", run.pk))
    counts = {row.table: row.cells for row in response.context["count_rows"]}
    assert [c.count for c in counts["content.Project"]][:2] == [0, 1]  # new, updated
    (entry,) = [e for e in response.context["entries"] if e.table == "content.Project"]
    name = next(f for f in entry.fields if f.name == "name")
    assert (name.old.text, entry.key, entry.action) == ("an older name", PROJECT, "update")
    assert name.new.text != "an older name"
    page = response.content.decode()
    shown = r'<td class="old">\s*<span class="value">an older name</span>\s*</td>\s*'
    shown += r'<td class="arrow">→</td>\s*<td class="new">\s*<span class="value">'
    assert re.search(shown + re.escape(escape(name.new.text)), page)


def test_the_plan_pages_through_records_filtered_by_table_and_action(operator, backup, monkeypatch):
    run = preview(operator, backup, mode="append")
    table = "content.Participant"
    plan = Plan(plan_of(run))
    try:
        skipped = plan.summary()[table]["skipped"]
        expected = plan.page(2, 3, table, "skip")
    finally:
        plan.close()
    assert skipped > 6
    monkeypatch.setattr(admin_preview, "PAGE_SIZE", 3)
    response = operator.get(url("_plan", run.pk), {"table": table, "action": "skip", "page": 2})
    shown = [(e.table, e.key, e.action) for e in response.context["entries"]]
    assert shown == [(e["table"], str(e["key"]), e["action"]) for e in expected]
    assert response.context["page"].page.paginator.count == skipped
    assert f"page 2 of {-(-skipped // 3)}" in response.content.decode()


def test_deletions_and_cascades_are_shown_record_by_record(operator, backup):
    owner = Project.objects.get(domaincode=PROJECT).owner
    extra = Project.objects.create(
        name="only here", domaincode="onlyhere", owner=owner, status=Status.objects.first()
    )
    Event.objects.filter(pk=Event.objects.order_by("pk")[0].pk).update(project=extra)
    run = preview(operator, backup, mode="replace", tables=["content.Project"])
    response = operator.get(url("_plan", run.pk), {"action": "delete"})
    entries = response.context["entries"]
    deleted = {(e.table, e.key) for e in entries if not e.cascaded}
    cascaded = {e.table for e in entries if e.cascaded}
    assert ("content.Project", "onlyhere") in deleted
    assert "content.Event" in cascaded  # the event the deleted project takes with it
    totals = response.context["count_rows"][-1]
    assert totals.total and totals.cells[5].count == sum(1 for e in entries if e.cascaded)


def test_a_large_plan_is_paged_without_being_read_whole(operator):
    """A plan of 30,000 entries (5 MB of JSON): a page deep in it, filtered, holds what it
    shows, and the request's memory stays far below the plan's size."""
    run = ImportRun.objects.create(
        archive="big.tar", mode="update", dry_run=True, database="default"
    )
    ImportRun.objects.filter(pk=run.pk).update(status="succeeded")
    recorder = PlanRecorder(plan_of(run), {"job": run.label})
    for n in range(30_000):
        fields = {"name": {"old": f"old {n} " + "x" * 60, "new": f"new {n} " + "y" * 60}}
        recorder.record(f"content.Table{n % 3}", f"key{n:05}", "update", fields)
    recorder.close()
    operator.get(url("_plan", run.pk))  # templates compiled, caches warm: not the plan's cost
    tracemalloc.start()
    try:
        response = operator.get(
            url("_plan", run.pk), {"table": "content.Table1", "action": "update", "page": 150}
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    keys = [entry.key for entry in response.context["entries"]]
    assert keys == [f"key{n:05}" for n in range(3 * 50 * 149 + 1, 3 * 50 * 150, 3)]
    assert "page 150 of 200" in response.content.decode()
    assert peak < 3_000_000, f"{peak:,} bytes"


def test_long_values_are_folded_and_the_whole_value_is_a_click_away(operator, backup):
    long, huge = "long text " * 40, "huge " * 5000
    make_older(PROJECT, "an older name", description=long)
    make_older("proj00001", "another older name", description=huge)
    run = preview(operator, backup)
    response = operator.get(url("_plan", run.pk), {"table": "content.Project"})
    fields = {e.key: {f.name: f for f in e.fields} for e in response.context["entries"] if e.fields}
    folded = fields[PROJECT]["description"].old
    assert folded.folded and not folded.link and folded.text == long
    assert "<details>" in response.content.decode()
    linked = fields["proj00001"]["description"].old
    assert linked.link and not linked.text
    whole = operator.get(linked.link)
    assert whole["Content-Type"] == "text/plain; charset=utf-8"
    assert whole.content.decode() == huge


def test_confirm_applies_exactly_the_plan_and_shows_the_result(operator, backup):
    run = preview(operator, backup)
    response = operator.post(url("_confirm", run.pk), follow=True)
    applied = ImportRun.objects.get(applies=run)
    assert applied.status == "succeeded" and not applied.dry_run
    assert response.redirect_chain[-1] == (url("_result", applied.pk), 302)
    assert Project.objects.get(domaincode=PROJECT).name != "an older name"
    page = response.content.decode()
    assert reverse("admin:sync_importrun_change", args=[applied.pk]) in page
    counts = {row.table: row.cells for row in response.context["count_rows"]}
    assert counts["content.Project"][1].count == 1  # updated
    plan = operator.get(url("_plan", run.pk)).content.decode()
    assert 'id="applied"' in plan and 'id="confirm"' not in plan


def test_confirm_is_post_only(operator, backup):
    run = preview(operator, backup)
    assert operator.get(url("_confirm", run.pk)).status_code == 405
    assert not ImportRun.objects.filter(applies=run).exists()


def test_a_change_after_the_preview_is_refused_naming_the_record(operator, backup):
    run = preview(operator, backup)
    make_older("proj00001", "changed after the preview")
    before = fingerprint()
    response = operator.post(url("_confirm", run.pk), follow=True)
    assert fingerprint() == before
    refused = ImportRun.objects.get(applies=run)
    assert refused.status == "failed"
    differs = response.context["differs"]
    assert differs.tables == ["content.Project"]
    assert differs.records == ["content.Project 'proj00001'"]
    page = response.content.decode()
    assert "Refused: the database changed since the preview" in page and 'id="again"' in page
    again = operator.post(url("_again", refused.pk))
    fresh = ImportRun.objects.latest("pk")
    assert again["Location"] == url("_progress", fresh.pk)
    assert (fresh.dry_run, fresh.mode, fresh.archive) == (True, "update", run.archive)
    assert "changed after the preview" in operator.get(url("_plan", fresh.pk)).content.decode()


def test_confirm_of_a_plan_whose_archive_changed_is_refused_on_the_plan_page(operator, backup):
    run = preview(operator, backup)
    with open(run.archive, "ab") as archive:
        archive.write(b"\0")
    response = operator.post(url("_confirm", run.pk), follow=True)
    assert response.redirect_chain == [(url("_plan", run.pk), 302)]
    assert "changed or is gone since the preview" in response.content.decode()
    assert not ImportRun.objects.filter(applies=run).exists()


def test_a_running_job_shows_its_live_progress(operator, backup):
    run = start_import(backup.storage_path, mode="update", dry_run=True, user=None)
    page = operator.get(url("_progress", run.pk)).content.decode()
    state_url = reverse("admin:sync_job_state", args=[run.label])
    assert f'data-job-url="{state_url}"' in page and "waiting for a worker" in page
    assert operator.get(state_url).json()["status"] == "queued"
    assert operator.get(url("_plan", run.pk))["Location"] == url("_progress", run.pk)


def test_a_record_holding_markup_is_shown_as_text(operator, backup):
    script, image = "<script>window.owned = 1</script>", '"><img src=x onerror=alert(1)>'
    make_older(PROJECT, script, description=image)
    run = preview(operator, backup)
    page = operator.get(url("_plan", run.pk)).content.decode()
    assert script not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.owned = 1&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


def test_an_uploaded_archive_is_previewed_as_a_backup_made_here(
    operator, backup, settings, tmp_path
):
    settings.BACKUP_DIR = tmp_path / "storage"
    archive = Path(backup.storage_path)
    backup.delete()  # made elsewhere: this site has no record of it
    with archive.open("rb") as stream:
        uploaded = record_upload(File(stream, name=archive.name), archive.name)
    run = preview(operator, uploaded)
    run.refresh_from_db()
    stored = settings.BACKUP_DIR / uploaded.storage_path  # its name in the archive storage
    assert (run.status, run.archive) == ("succeeded", str(stored))
    assert "an older name" in operator.get(url("_plan", run.pk)).content.decode()


def test_a_backup_without_its_archive_cannot_be_previewed(operator, backup):
    Path(backup.storage_path).unlink()
    response = operator.get(choose_url(backup))
    assert f"Nothing to preview: {backup.file_name} is gone" in response.content.decode()
    operator.post(choose_url(backup), {"mode": "update"})
    assert not ImportRun.objects.exists()


PAGES = [
    ("get", "_import", "backup"),
    ("post", "_import", "backup"),
    ("get", "_progress", "run"),
    ("get", "_plan", "run"),
    ("get", "_value", "run"),
    ("post", "_confirm", "run"),
    ("post", "_again", "run"),
    ("get", "_result", "run"),
]


def test_staff_without_run_import_gets_403_on_each_page_and_action(operator, backup):
    run = preview(operator, backup)
    stranger = staff_client("sync.view_importrun", "sync.view_backuprecord", name="stranger")
    runs = ImportRun.objects.count()
    for method, name, of in PAGES:
        target = choose_url(backup) if of == "backup" else url(name, run.pk)
        data = {"mode": "update"} if method == "post" else {}
        response = getattr(stranger, method)(target, data)
        assert response.status_code == 403, (method, name)
        assert operator.get(target).status_code != 403, name  # the page is there
    assert ImportRun.objects.count() == runs


def test_a_signed_out_visitor_is_sent_to_log_in(backup):
    response = Client().get(choose_url(backup))
    assert response.status_code == 302 and "/login/" in response["Location"]
