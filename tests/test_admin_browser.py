"""The admin in a real browser (Playwright driving Debian's chromium, see tests/browser.py),
against Django's live server: on SQLite and, in the PostgreSQL pass, on PostgreSQL."""

import re

import pytest
from playwright.sync_api import expect

from sync.models import BackupRecord
from tests.browser import *  # noqa: F403 - the browser fixtures
from tests.browser import log_in, staff_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_new_export_of_two_tables_runs_to_done_and_downloads(
    browser, live_server, seeded, screenshot
):
    page = log_in(browser, live_server, staff_user(superuser=True, name="operator"))
    page.goto("/admin/sync/backuprecord/")
    screenshot(page, "backups-empty")
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
