"""Browser tests of the admin: Playwright driving Debian's chromium against Django's live server.

Use it from a test module with ``from tests.browser import *  # noqa: F403`` (the fixtures
must be in the module's namespace for pytest to find them) or list it in
``pytest_plugins`` of a conftest. Fixtures:

- ``browser`` (per module): a headless chromium, ``/usr/bin/chromium`` as installed by
  ``scripts/system-deps.sh`` — never a browser downloaded by ``playwright install``.
- ``admin_page``: a page signed in as a superuser, against ``live_server``.
- ``page_as``: ``page_as("sync.run_export", ...)`` gives a page signed in as a staff user holding
  exactly those permissions (``staff_user`` makes such a user without a page).
- ``quick_passwords``: a fast password hasher, for tests that sign in through the form.
- ``backup_dir``: BACKUP_DIR (where exports write, the archive storage) in a temporary folder.
- ``screenshot``: ``screenshot(page, "backups")`` saves ``backups.png`` — into ``docs/admin/``
  when ``UPDATE_SCREENSHOTS=1`` (then commit them), else into the test's temporary folder, so
  that a test run leaves the work tree clean.

Django's async-unsafe guard: Playwright's sync API runs an asyncio event loop in the test's own
thread, so Django sees a running loop and refuses every ORM call the test makes meanwhile
(SynchronousOnlyOperation). The test and the loop never run at once — Playwright's sync calls
block until done — so the guard protects nothing here: ``DJANGO_ALLOW_ASYNC_UNSAFE`` is set for
the time the browser is open, in this test process only (never in settings, never in the live
server's code path of production). Running Playwright in a thread of its own would work too,
but every page action would then need handing over to that thread.

The live server runs in a thread of this process and sees the test's data through the
``transactional_db`` that ``live_server`` implies (committed data, tables flushed after each
test). On SQLite the test database lives in memory and pytest-django hands the live server's
thread the test's own connection; on PostgreSQL it opens its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT_DIR = Path(__file__).resolve().parent.parent / "docs" / "admin"
PASSWORD = "a-browser-test-password"
# Generous: the machine running the tests may be busy; an action that works takes well under.
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/system-deps.sh (installs chromium).")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # see the module's docstring
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield chromium
            finally:
                chromium.close()


def grant(user, *permissions: str) -> None:
    """Give ``user`` the permissions named ``app_label.codename``."""
    for name in permissions:
        app_label, codename = name.split(".", 1)
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def staff_user(*permissions: str, superuser: bool = False, name: str = "", password: bool = False):
    """A staff user holding exactly ``permissions`` (all of them if ``superuser``). With
    ``password``, its password is ``PASSWORD`` (hashing one costs a second on a busy machine:
    a user signed in by ``force_login`` needs none)."""
    users = get_user_model().objects
    number = users.count() + 1
    sysmail = f"{name or 'staff'}-{number}@example.org"
    maker = users.create_superuser if superuser else users.create_user
    user = maker(sysmail, PASSWORD if password else None, is_staff=True)
    grant(user, *permissions)
    return user


def new_context(browser, live_server):
    """A browser context of its own (cookies, storage) against the live server; the admin's
    navigation sidebar closed, leaving the page its width (and the screenshots readable)."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1600, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    return context


def signed_in_page(browser, live_server, user):
    """A new page of its own browser context, signed in as ``user`` (by session cookie: the
    login form is tested once, in ``log_in``)."""
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    context = new_context(browser, live_server)
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    return context.new_page()


def log_in(browser, live_server, user):
    """A new page, signed in through the admin's login form (``user`` made with a password)."""
    page = new_context(browser, live_server).new_page()
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", user.sysmail)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    return page


@pytest.fixture
def quick_passwords(settings) -> None:
    """Passwords hashed with a fast hasher in this test (Django's default takes a second or
    more per hash on a busy machine; signing in through the form hashes twice)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_page(browser, live_server) -> Iterator:
    page = signed_in_page(browser, live_server, staff_user(superuser=True, name="admin"))
    yield page
    page.context.close()


@pytest.fixture
def page_as(browser, live_server) -> Iterator[Callable]:
    pages = []

    def make(*permissions: str):
        page = signed_in_page(browser, live_server, staff_user(*permissions))
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.context.close()


@pytest.fixture
def backup_dir(settings, tmp_path) -> Path:
    """BACKUP_DIR (and so the archive storage) in the test's temporary folder."""
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.BACKUP_DIR.mkdir()
    return settings.BACKUP_DIR


@pytest.fixture
def screenshot(tmp_path) -> Callable[..., Path]:
    folder = SCREENSHOT_DIR if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path

    def take(page, name: str, full_page: bool = True) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 1000, f"{path} is (nearly) empty"
        return path

    return take
