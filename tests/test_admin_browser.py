"""The admin in a real browser (Playwright driving Debian's chromium, see tests/browser.py),
against Django's live server: on SQLite and, in the PostgreSQL pass, on PostgreSQL."""

import re
import time

import pytest
from playwright.sync_api import expect

from crearis.content.models import Tag
from sync.jobs.exports import start_export
from sync.jobs.lifecycle import channel_of, claim, executing
from sync.jobs.reporter import JobCancelled, JobReporter
from sync.models import BackupRecord, Job
from tests.browser import *  # noqa: F403 - the browser fixtures
from tests.browser import log_in, staff_user

# The pages are the same on every engine (the test-client tests in test_admin_pages.py run on
# each): the browser runs once.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.once]


def test_new_export_of_two_tables_runs_to_done_and_downloads(
    browser, live_server, seeded, backup_dir, quick_passwords, screenshot
):
    page = log_in(browser, live_server, staff_user(superuser=True, name="operator", password=True))
    page.goto("/admin/sync/backuprecord/")
    page.get_by_role("link", name="New export…").click()
    page.check("input[name=tables][value='content.Status']")
    page.check("input[name=tables][value='content.Tag']")
    screenshot(page, "new-export")
    page.get_by_role("button", name="Start export").click()

    job = page.locator("#job")
    expect(job.locator("[data-field=status]")).to_have_text("succeeded")
    expect(page.locator("#job-result")).to_be_visible()
    screenshot(page, "export-done")
    backup = BackupRecord.objects.get()
    assert backup.tables == ["content.Status", "content.Tag"]
    assert backup.total_records > 0

    with page.expect_download() as download:
        page.locator("#download").click()
    saved = download.value.path()
    assert download.value.suggested_filename == backup.file_name
    assert saved.stat().st_size == backup.size

    page.goto("/admin/sync/backuprecord/")
    expect(page.locator("#result_list")).to_contain_text(backup.file_name)
    expect(page.locator("#result_list")).to_contain_text(re.compile("succeeded"))
    screenshot(page, "backups")
    page.get_by_role("button", name="Verify").click()
    expect(page.locator(".messagelist")).to_contain_text(
        f"{backup.file_name}: OK — format v1, 2 tables, {backup.total_records} records, "
        "all checksums match."
    )


def test_cancel_of_a_running_job_from_the_jobs_page(admin_page, seeded, screenshot):
    """A job whose work this test drives (through the engine's own lifecycle and reporter):
    the open Jobs page shows it when it starts and follows its progress without reloading;
    its Cancel stops it."""
    page = admin_page
    page.goto("/admin/sync/backuprecord/jobs/")
    expect(page.locator("#jobs")).to_contain_text("No jobs yet.")
    job = start_export(tables=["content.Tag"], started_by="a test")
    claim(job)
    reporter = JobReporter()
    with pytest.raises(JobCancelled), executing(job, reporter, "no archive was written"):
        reporter.phase("reading", total=1000)
        reporter.table("content.Tag")
        reporter.advance(250)
        reporter.beat()  # published now, not within the next second
        row = page.locator(f"tr[data-job='{job.label}']")
        expect(row.locator("[data-field=progress_text]")).to_have_text(
            "reading · content.Tag · 250/1,000 records"
        )
        expect(page.locator("#jobs")).not_to_contain_text("No jobs yet.")
        reporter.advance(250)
        expect(row.locator("[data-field=progress_text]")).to_contain_text("500/1,000")
        expect(row.locator("progress")).to_have_attribute("value", "500")
        screenshot(page, "jobs")
        row.get_by_role("button", name="Cancel").click()  # the row the page made itself
        expect(page.locator(".messagelist")).to_contain_text(f"Asked {job.label} to stop")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the engine's loop, until it is told to stop
            reporter.advance(1)
            time.sleep(0.05)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    row = page.locator(f"tr[data-job='{job.label}']")
    expect(row.locator("[data-field=status]")).to_have_text("cancelled")
    expect(row.locator("[data-field=error]")).to_contain_text("Cancelled on request")
    expect(row.get_by_role("button", name="Cancel")).to_be_hidden()
    assert channel_of(job).read() is None


def test_a_user_without_the_permission_gets_403(page_as, seeded):
    page = page_as("sync.view_backuprecord")
    response = page.goto("/admin/sync/backuprecord/new-export/")
    assert response.status == 403
    page.goto("/admin/sync/backuprecord/")
    expect(page.get_by_role("link", name="New export…")).to_have_count(0)


def test_export_selected_from_a_changelist(admin_page, demo, backup_dir, screenshot):
    page = admin_page
    page.goto("/admin/content/tag/")
    names = [Tag.objects.order_by("name")[i].name for i in (0, 1)]
    for name in names:
        page.locator("#result_list tr", has_text=name).locator("input.action-select").check()
    page.select_option("select[name=action]", "export_selected")
    page.click("button[name=index]")
    expect(page.locator("#export-selected")).to_contain_text("Export 2 selected tags")
    screenshot(page, "export-selected")
    page.get_by_role("button", name="Export").click()
    expect(page.locator("#job [data-field=status]")).to_have_text("succeeded")
    backup = BackupRecord.objects.get()
    assert backup.kind == "selected" and backup.total_records == 2
