"""Preview import → plan → Confirm in a real browser (Playwright driving Debian's chromium, see
tests/browser.py) against Django's live server: on SQLite and, in the PostgreSQL pass, on
PostgreSQL."""

from datetime import timedelta

import pytest
from django.db.models import F
from django.urls import reverse
from playwright.sync_api import expect

from crearis.content.models import Tag
from sync.jobs.dispatch import execute_job
from sync.jobs.exports import export
from sync.jobs.imports import start_import
from sync.models import BackupRecord, ImportRun
from tests.browser import *  # noqa: F403 - the browser fixtures
from tests.browser import log_in, signed_in_page, staff_user

# The pages are the same on every engine (test_admin_preview.py runs on each): the browser runs
# once.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.once]

OPERATOR = ("sync.run_export", "sync.run_import", "sync.view_backuprecord", "sync.view_importrun")


def make_older(tag: Tag, **fields) -> None:
    """The site goes back to an older version of ``tag`` (restored from an old dump, say): the
    archive's version is newer, so an update-mode import brings it back."""
    older = F("updated_at") - timedelta(days=1)
    Tag.objects.filter(pk=tag.pk).update(updated_at=older, **fields)


def test_export_then_preview_an_update_shows_old_and_new_and_confirm_applies_it(
    browser, live_server, seeded, backup_dir, screenshot
):
    tag = Tag.objects.order_by("pk").first()
    page = log_in(browser, live_server, staff_user(*OPERATOR, name="operator", password=True))

    # New export with two tables; its progress reaches done.
    page.goto("/admin/sync/backuprecord/")
    page.get_by_role("link", name="New export…").click()
    page.check("input[name=tables][value='content.Status']")
    page.check("input[name=tables][value='content.Tag']")
    page.get_by_role("button", name="Start export").click()
    expect(page.locator("#job [data-field=status]")).to_have_text("succeeded")
    backup = BackupRecord.objects.get()

    make_older(tag, description="an older description")

    # Preview import… of that archive in update mode: the plan shows the change.
    page.goto("/admin/sync/backuprecord/")
    page.get_by_role("link", name="Preview import…").click()
    expect(page.locator("#preview-form h2")).to_contain_text(backup.file_name)
    page.check("input[name=mode][value=update]")
    screenshot(page, "preview-import")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_url("**/plan/")
    row = page.locator("tr.entry", has=page.get_by_text(tag.name, exact=True))
    description = row.locator("tr.field[data-field=description]")
    expect(description.locator("td.old")).to_have_text("an older description")
    expect(description.locator("td.new")).to_have_text(tag.description)
    expect(row.locator(".entry-action")).to_have_text("update")
    screenshot(page, "preview-plan")

    # Confirm applies it: the result links the import run, and the record changed.
    page.get_by_role("button", name="Confirm: import as planned").click()
    page.wait_for_url("**/result/")
    expect(page.locator("#result-status strong")).to_have_text("succeeded")
    applied = ImportRun.objects.get(applies__isnull=False)
    expect(page.locator("#run-link")).to_have_attribute(
        "href", reverse("admin:sync_importrun_change", args=[applied.pk])
    )
    screenshot(page, "preview-result")
    assert Tag.objects.get(pk=tag.pk).description == tag.description != "an older description"


def test_a_change_after_the_preview_is_refused_and_a_new_preview_offered(
    browser, live_server, seeded, backup_dir, screenshot
):
    tag, other = Tag.objects.order_by("pk")[:2]
    backup = export(tables=["content.Tag"], output_dir=backup_dir).backup
    make_older(tag, description="an older description")
    page = signed_in_page(browser, live_server, staff_user(*OPERATOR, name="operator"))
    page.goto(reverse("admin:sync_preview_import") + f"?backup={backup.pk}")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_url("**/plan/")

    make_older(other, description="changed after the preview")
    page.get_by_role("button", name="Confirm: import as planned").click()
    page.wait_for_url("**/result/")
    expect(page.locator("#plan-differs")).to_contain_text(f"content.Tag '{other.name}'")
    screenshot(page, "preview-refused")
    assert Tag.objects.get(pk=tag.pk).description == "an older description"

    page.get_by_role("button", name="Preview again").click()
    page.wait_for_url("**/plan/")
    expect(page.locator("#plan-entries")).to_contain_text("changed after the preview")


def test_the_progress_page_follows_a_job_on_a_worker_and_moves_on_to_its_plan(
    browser, live_server, seeded, backup_dir
):
    """A dry run queued as with a broker, then executed here as a worker would: the page
    shows it waiting, then, without a reload by the user, its plan."""
    tag = Tag.objects.order_by("pk").first()
    backup = export(tables=["content.Tag"], output_dir=backup_dir).backup
    make_older(tag, description="an older description")
    run = start_import(backup.storage_path, mode="update", dry_run=True, collect_changes=True)
    page = signed_in_page(browser, live_server, staff_user(*OPERATOR, name="operator"))
    page.goto(reverse("admin:sync_preview_progress", args=[run.pk]))
    expect(page.locator("#job [data-field=progress_text]")).to_have_text("waiting for a worker")
    execute_job(run)
    page.wait_for_url("**/plan/")
    expect(page.locator("tr.entry.action-update code")).to_have_text(tag.name)


def test_markup_in_records_is_shown_as_text_and_never_runs(
    browser, live_server, seeded, backup_dir
):
    script = "<script>window.owned = 'script';</script>"
    image = '"><img src=x onerror="window.owned = \'image\'">'
    name = '<b id="bold">tag</b>' + image
    tag = Tag.objects.create(name=name, description=script)
    backup = export(tables=["content.Tag"], output_dir=backup_dir).backup
    make_older(tag, description=image + " and a long text" * 30)  # folded: one click away

    page = signed_in_page(browser, live_server, staff_user(*OPERATOR, name="operator"))
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(reverse("admin:sync_preview_import") + f"?backup={backup.pk}")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_url("**/plan/")
    row = page.locator("tr.entry.action-update")
    expect(row.locator("code")).to_have_text(name)
    description = row.locator("tr.field[data-field=description]")
    expect(description.locator("td.new")).to_have_text(script)
    description.locator("td.old summary").click()  # unfold the whole old value
    expect(description.locator("td.old details div.value")).to_be_visible()
    expect(description.locator("td.old details div.value")).to_contain_text(image + " and a")

    assert page.evaluate("window.owned") is None
    assert page.locator("#bold").count() == 0 and row.locator("img").count() == 0
    assert dialogs == []


def test_a_user_without_run_import_gets_403(browser, live_server, seeded, backup_dir, page_as):
    backup = export(tables=["content.Tag"], output_dir=backup_dir).backup
    page = page_as("sync.view_backuprecord", "sync.view_importrun")
    response = page.goto(reverse("admin:sync_preview_import") + f"?backup={backup.pk}")
    assert response.status == 403
