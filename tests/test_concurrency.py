"""Exports and imports while other processes work on the same database: one consistent
snapshot per export on every engine, SQLite's writers not held back by an export, one import
at a time, and imports that were killed or interrupted.

Every process here is a real one (``manage.py`` or ``tests.busy_site``) with its own
connection; SQLite sites are files (pytest's SQLite test database lives in memory).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection, connections

from crearis.content.models import Tag
from sync.jobs.exports import export
from tests.archive_tools import dangling_references, read_records
from tests.conftest import run_command
from tests.job_tools import reporter_calling
from tests.sites import Site, database_url

EVENTS = 2000  # ≈17,000 records: an export reads for about a second

pytestmark = pytest.mark.django_db(transaction=True)


def on(alias: str):
    """A parameter: the test on the server database ``alias`` (beside the default one)."""
    database = pytest.mark.django_db(databases=["default", alias], transaction=True)
    return pytest.param(alias, marks=[pytest.mark.crossdb, database], id=alias)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Site:
    """A SQLite site built once, holding demo data (seed 2), and in its backup folder an
    archive of other demo data (seed 1): importing it changes every content table."""
    site = Site.sqlite(tmp_path_factory.mktemp("template"))
    site.run("migrate", "-v0")
    site.run("syncseed")
    site.run("syncdemo", "--events", str(EVENTS))
    site.run("syncexport", "--quiet")
    site.run("syncdemo", "--events", str(EVENTS), "--seed", "2", "--force")
    return site


def fill(alias: str, tmp_path, seed: int = 1) -> Site:
    """A site on pytest's test database ``alias`` (emptied after the test), with demo data."""
    site = Site(database_url(alias), tmp_path / "backups", alias)
    site.backups.mkdir()
    run_command("syncseed", database=alias)
    run_command("syncdemo", events=EVENTS, seed=seed, database=alias)
    return site


@pytest.fixture
def site(template, tmp_path) -> Site:
    """A copy of ``template`` on the default database's engine: a SQLite file when that is
    SQLite, else the default test database itself."""
    if connection.vendor == "sqlite":
        site = Site.sqlite(tmp_path)
        site.backups.mkdir()
        site.sqlite_file.write_bytes(template.sqlite_file.read_bytes())
    else:
        site = fill("default", tmp_path, seed=2)
    archive = the_archive(template)
    (site.backups / archive.name).write_bytes(archive.read_bytes())
    return site


def the_archive(site: Site) -> Path:
    (archive,) = site.backups.glob("*.backup.tar.gz")
    return archive


# -- exports under load ------------------------------------------------------------------------


# On PostgreSQL the "pg" case is that test: "default" is SQLite's (a site in a file).
SQLITE_SITE = ["default"] if connection.vendor == "sqlite" else []


@pytest.mark.parametrize("alias", [*SQLITE_SITE, on("pg"), on("maria")])
def test_an_export_under_concurrent_writes_holds_every_record_it_refers_to(
    alias, request, tmp_path
):
    site = request.getfixturevalue("site") if alias == "default" else fill(alias, tmp_path)
    progress = tmp_path / "commits"

    writer = site.start("-m", "tests.busy_site", "write", progress)
    try:
        exported = site.run("-m", "tests.busy_site", "export", progress, tmp_path / "out")
    finally:
        writer.send_signal(signal.SIGTERM)
        _, errors = writer.communicate(timeout=60)

    assert writer.returncode == 0, f"the writer failed while the export read: {errors}"
    outcome = json.loads(exported.stdout)
    assert outcome["overlap"] >= 5, "the writer hardly wrote while the export read"
    assert dangling_references(outcome["path"]) == []


@pytest.mark.parametrize("alias", [on("pg"), on("maria")])
def test_a_row_committed_while_an_export_reads_is_not_in_its_archive(alias, tmp_path):
    """Step by step: another connection commits a tag after the export has read the statuses
    and before it reads the tags."""
    run_command("syncseed", database=alias)
    tags = set(Tag.objects.using(alias).values_list("name", flat=True))
    other = connections.create_connection(alias)
    committed = []

    def commit_a_tag(count: int) -> None:
        if not committed:
            with other.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO content_tag (name, description, name_i18n, desc_i18n, "
                    "created_at, updated_at) VALUES ('late', '', '{}', '{}', CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP)"
                )
            committed.append(True)

    try:
        path = export(
            tables=["content.Status", "content.Tag"],
            using=alias,
            output_dir=tmp_path,
            reporter=reporter_calling(commit_a_tag),
        ).path
    finally:
        other.close()

    _, records = read_records(path)
    assert committed
    assert {tag["name"] for tag in records["content.Tag"]} == tags
    assert Tag.objects.using(alias).filter(name="late").exists()
    assert session_isolation(alias) == SESSION_ISOLATION[alias]  # the snapshot's was its own


SESSION_ISOLATION = {"pg": "read committed", "maria": "READ-COMMITTED"}


def session_isolation(alias: str) -> str:
    with connections[alias].cursor() as cursor:
        if connections[alias].vendor == "postgresql":
            cursor.execute("SHOW transaction_isolation")
        else:
            cursor.execute("SELECT @@tx_isolation")
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "sqlite", reason="a SQLite journal")
def test_sqlite_sites_use_the_wal_journal(site):
    """WAL is what lets the writer above commit while the export holds its snapshot."""
    assert site.query("PRAGMA journal_mode") == [("wal",)]


# -- imports side by side ------------------------------------------------------------------------


def start_import(site: Site) -> subprocess.Popen:
    """A replace import that changes every content table (see ``template``)."""
    return site.start("syncimport", the_archive(site), "--no-input", "--quiet")


def wait_until_running(site: Site, importing: subprocess.Popen) -> int:
    """Wait until ``importing`` has recorded its ImportRun; return the run's id."""
    deadline = time.monotonic() + 60
    while True:
        running = [run for run in site.import_runs() if run[1] == "running"]
        if running:
            return running[0][0]
        assert importing.poll() is None, f"the import ended early: {importing.communicate()}"
        assert time.monotonic() < deadline, "the import never started"
        time.sleep(0.02)


def test_a_second_import_is_refused_at_once_naming_the_first(site):
    first = start_import(site)
    first_run = wait_until_running(site, first)

    # The first import is held where it is (running, its lock taken) while the second one
    # starts: on a busy machine the second's start-up would otherwise outlast the first.
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        assert first.poll() is None, "the first import ended before the second was started"
        second = site.run("syncimport", the_archive(site), "--no-input", check=False)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    _, first_errors = first.communicate(timeout=300)

    assert second.returncode == 1
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith(
        f"CommandError: Refused: import-{first_run} (replace import of {the_archive(site)}"
    )
    assert f"pid {first.pid} on {socket.gethostname()}) is running on database 'default'" in line

    assert first.returncode == 0, first_errors
    runs = {run_id: (status, error) for run_id, status, _, error in site.import_runs()}
    assert runs.pop(first_run)[0] == "succeeded"
    # the refusal is recorded if that did not mean waiting for the first import
    assert all(status == "failed" and text.startswith("Refused") for status, text in runs.values())


def signal_an_import(site: Site, send: Callable[[int], None]) -> tuple[subprocess.Popen, int]:
    """Start an import and ``send`` a signal to its process id while it works; return the
    process and its run's id."""
    importing = start_import(site)
    run_id = wait_until_running(site, importing)
    # Held where it is, the signal lands inside the import however busy the machine is (a
    # signal sent to a stopped process is delivered when it goes on).
    os.killpg(importing.pid, signal.SIGSTOP)
    try:
        assert importing.poll() is None, "the import ended before the signal"
        send(importing.pid)
    finally:
        os.killpg(importing.pid, signal.SIGCONT)
    return importing, run_id


def test_a_killed_import_is_marked_failed_and_the_next_import_runs(site):
    before = site.content_fingerprint()
    killed, killed_run = signal_an_import(site, lambda pid: os.kill(pid, signal.SIGKILL))
    killed.wait()
    assert site.content_fingerprint() == before

    site.run("syncimport", the_archive(site), "--no-input", "--quiet")

    runs = {run_id: (status, pid, error) for run_id, status, pid, error in site.import_runs()}
    status, pid, error = runs.pop(killed_run)
    assert (status, pid) == ("failed", killed.pid)
    assert error.startswith("Interrupted: the importing process ended before the import finished")
    assert [status for status, *_ in runs.values()] == ["succeeded"]
    assert site.content_fingerprint() != before


def test_ctrl_c_during_an_import_rolls_it_back_and_says_so_in_one_line(site):
    before = site.content_fingerprint()

    # Ctrl-C at a terminal: SIGINT to the import's whole process group (its archive check too)
    importing, run_id = signal_an_import(site, lambda pid: os.killpg(pid, signal.SIGINT))
    _, errors = importing.communicate(timeout=120)

    assert importing.returncode == 1
    assert errors.strip() == "CommandError: Import interrupted; nothing was changed."
    assert site.content_fingerprint() == before
    (run,) = site.import_runs()
    assert run[:2] == (run_id, "cancelled")
    assert run[3] == "Interrupted (Ctrl-C) before the import finished; nothing was changed."
