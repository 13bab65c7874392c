"""The project's settings plus the test-only app ``tests.awkward`` (see its models), and a
SQLite database in a file (alias ``sqlitefile``) for tests where other processes work on the
test's database: Django's SQLite test database is otherwise in memory, private to one process.
Only the tests that ask for it create it."""

import atexit
import shutil
import tempfile
from pathlib import Path

from crearis.settings import *  # noqa: F403
from crearis.settings import DATABASES, INSTALLED_APPS, TEST_DB_SUFFIX, VAR_DIR

INSTALLED_APPS = [*INSTALLED_APPS, "tests.awkward"]

DATABASES["sqlitefile"] = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": str(VAR_DIR / "sqlitefile.sqlite3"),
    "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL", "timeout": 20},  # as crearis.settings
    "TEST": {
        "NAME": str(VAR_DIR / f"test_sqlitefile{TEST_DB_SUFFIX}.sqlite3"),
        "DEPENDENCIES": [],
    },
}

# Plans of the test runs' jobs, apart from the project's var/ and from other test processes.
SYNC_PLAN_DIR = Path(tempfile.mkdtemp(prefix="crearis-plans-"))
atexit.register(shutil.rmtree, SYNC_PLAN_DIR, True)
