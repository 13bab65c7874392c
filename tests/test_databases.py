"""The database a command is given: an alias that is not configured, a database that does not
exist, one that is not migrated. Each is one line saying what to do, and nothing is written."""

from __future__ import annotations

import os
from contextlib import closing

import psycopg
import pytest

from tests.cli import assert_refused
from tests.sites import Site

PG = "postgres://postgres@127.0.0.1:5432"
SUFFIX = os.environ.get("TEST_DB_SUFFIX", "")
COMMANDS = [
    ("syncimport", ["site.backup.tar.gz", "--no-input"]),
    ("syncexport", []),
    ("syncinspect", []),
    ("syncseed", []),
]


# Every command that takes --database (the ones above start from it).
ALIAS_COMMANDS = [
    *COMMANDS,
    ("syncinspect", ["--reconcile"]),
    ("syncjobs", []),
    ("syncplan", ["import-1"]),
    ("syncrotate", ["--dry-run"]),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("command", "args"), ALIAS_COMMANDS, ids=[" ".join([c, *a[:1]]) for c, a in ALIAS_COMMANDS]
)
def test_an_unknown_alias_is_named_with_the_known_ones(command, args):
    assert_refused(
        *args,
        "--database",
        "nowhere",
        command=command,
        expected="Unknown database alias 'nowhere': use one of default",
    )


def one_line_refusal(site: Site, command: str, *args: str) -> str:
    done = site.run(command, *args, check=False)
    assert done.returncode == 1, done.stdout
    (line,) = done.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize(("command", "args"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_a_missing_postgresql_database_is_named(command, args, tmp_path):
    site = Site(f"{PG}/crearis_missing{SUFFIX}", tmp_path)

    line = one_line_refusal(site, command, *args)

    assert line.startswith(f"CommandError: Cannot use database 'default' (crearis_missing{SUFFIX})")
    assert f'database "crearis_missing{SUFFIX}" does not exist. Check its settings' in line
    assert line.endswith("run `python manage.py migrate --database default` first.")


@pytest.fixture(scope="module")
def empty_postgresql_database():
    """A PostgreSQL database without a single table; dropped afterwards."""
    name = f"crearis_empty{SUFFIX}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def tables_of(url: str) -> list[str]:
    with closing(psycopg.connect(url)) as connection:
        rows = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return [name for (name,) in rows]


@pytest.mark.parametrize(("command", "args"), COMMANDS, ids=[c for c, _ in COMMANDS])
def test_an_unmigrated_database_is_refused_saying_run_migrate(
    command, args, empty_postgresql_database, tmp_path
):
    site = Site(f"{PG}/{empty_postgresql_database}", tmp_path)

    line = one_line_refusal(site, command, *args)

    assert line.startswith(
        f"CommandError: Database 'default' ({empty_postgresql_database}) is not migrated: "
    )
    assert line.endswith("run `python manage.py migrate --database default` first.")
    assert tables_of(site.url) == []


def test_a_missing_sqlite_file_is_named_and_not_created(tmp_path):
    site = Site.sqlite(tmp_path)

    line = one_line_refusal(site, "syncexport")

    assert line == (
        f"CommandError: Database 'default': the SQLite file {site.sqlite_file} does not exist; "
        "run `python manage.py migrate --database default` first."
    )
    assert not site.sqlite_file.exists()
