"""Jobs watched and stopped from another process, as the web and worker containers do: an
import's progress read while its transaction is open, a cancel that rolls it back (also
while the archive is still being verified), and a killed import shown stale, then failed.

Each test runs on a database that other processes can open: SQLite in a file (the SQLite
pass), PostgreSQL (the PostgreSQL pass) and MariaDB (cross-database, in the SQLite pass).
The import runs in a real ``manage.py syncimport`` process; this test reads the job's row and
the sync cache as ``syncjobs`` does, and asks the job to stop as ``syncjobs --cancel`` does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection, connections

from crearis.content.models import Tag
from sync.jobs.lifecycle import JobState, request_cancel
from sync.models import ImportRun, Job
from tests.conftest import run_command
from tests.fingerprint import fingerprint
from tests.job_tools import cache_url, many_tags_archive, running_with_records, watch
from tests.sites import Site, database_url


def on(alias: str, *marks) -> pytest.param:
    return pytest.param(
        alias, marks=[*marks, pytest.mark.django_db(transaction=True, databases=["default", alias])]
    )


ALIASES = [
    on("default" if connection.vendor == "postgresql" else "sqlitefile"),
    on("maria", pytest.mark.crossdb),
]
WATCHED_TAGS = 300_000  # an import of a few seconds
VERIFIED_TAGS = 2_000_000  # seconds of verification after the import's first 20,000 rows


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("archives")
    return {
        "watched": many_tags_archive(folder / "watched.backup.tar", WATCHED_TAGS),
        "verified": many_tags_archive(folder / "verified.backup.tar", VERIFIED_TAGS),
    }


@pytest.fixture(params=ALIASES)
def site(request, tmp_path):
    """A site on the test database ``alias``, whose processes share this test's sync cache
    and count a job stale after 3 s without a heartbeat."""
    alias = request.param
    if connections[alias].vendor == "sqlite":
        url = f"sqlite:///{connections[alias].settings_dict['NAME']}"
    else:
        url = database_url(alias)
    settings = {"SYNC_CACHE_URL": cache_url(), "SYNC_JOB_STALE_AFTER": "3"}
    return Site(url, tmp_path / "backups", alias, settings)


@pytest.fixture
def started(site):
    """Start ``manage.py`` ARGS on the site; the processes are ended after the test."""
    processes = []

    def start(*args: str) -> subprocess.Popen:
        processes.append(site.start(*args))
        return processes[-1]

    yield start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def import_job(site: Site, timeout: float = 60) -> ImportRun:
    """The import job the other process created (it appears once the process has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = ImportRun.objects.using(site.alias).order_by("-pk").first()
        if run is not None:
            return run
        time.sleep(0.05)
    raise AssertionError("the import never created its job")


def test_another_process_reads_an_imports_progress_while_it_runs(site, started, archives):
    importing = started("syncimport", str(archives["watched"]), "--no-input", "--quiet")
    run = import_job(site)
    first = watch(run, until=running_with_records)

    listed = site.run("syncjobs").stdout  # as a user watching it sees it
    rest = watch(run, until=lambda state: state.status not in ("queued", "running"))
    _, err = importing.communicate(timeout=120)

    assert importing.returncode == 0, err
    running = [s for s in first + rest if s.status == Job.Status.RUNNING and s.phase]
    done = [s.done for s in running]
    assert len(set(done)) >= 2, f"progress did not advance while running: {done}"
    assert done == sorted(done) and any(0 < n < WATCHED_TAGS for n in done)
    assert {s.total for s in running} == {WATCHED_TAGS}
    assert {s.table for s in running if s.phase == "reading"} == {"content.Tag"}
    assert rest[-1].status == Job.Status.SUCCEEDED
    assert Tag.objects.using(site.alias).count() == WATCHED_TAGS
    line = next(line for line in listed.splitlines() if line.startswith(run.label))
    assert re.search(rf"running\s+\w+ · content\.Tag · [\d,]+/{WATCHED_TAGS:,} records", line)


def test_cancelling_an_import_from_another_process_rolls_it_back(site, started, archives):
    run_command("syncseed", database=site.alias)
    Tag.objects.using(site.alias).create(name="only here")  # replace mode would delete it
    before = fingerprint(site.alias)
    importing = started("syncimport", str(archives["watched"]), "--no-input", "--quiet")
    run = import_job(site)
    watch(run, until=running_with_records)

    asked = time.monotonic()
    site.run("syncjobs", "--cancel", run.label)
    _, err = importing.communicate(timeout=60)
    stopped_after = time.monotonic() - asked

    assert importing.returncode == 1
    assert err.strip().endswith(f"{run.label} cancelled on request; nothing was changed.")
    assert "Traceback" not in err
    assert stopped_after < 10
    run.refresh_from_db()
    assert run.status == Job.Status.CANCELLED
    assert fingerprint(site.alias) == before


def test_a_cancel_takes_effect_while_the_archive_is_being_verified(site, started, archives):
    importing = started("syncimport", str(archives["verified"]), "--no-input", "--quiet")
    run = import_job(site)
    watch(run, until=lambda state: state.phase == "verifying")

    asked = time.monotonic()
    request_cancel(run)
    importing.communicate(timeout=60)
    stopped_after = time.monotonic() - asked

    run.refresh_from_db()
    assert (run.status, run.progress["phase"]) == (Job.Status.CANCELLED, "verifying")
    assert stopped_after < 4, f"the cancel took {stopped_after:.1f} s"
    assert not Tag.objects.using(site.alias).exists()


def test_a_killed_import_is_shown_stale_then_marked_failed(site, started, archives, settings):
    settings.SYNC_JOB_STALE_AFTER = 3  # as the site's processes have it (Site.env)
    importing = started("syncimport", str(archives["watched"]), "--no-input", "--quiet")
    run = import_job(site)
    watch(run, until=running_with_records)

    importing.send_signal(signal.SIGKILL)
    importing.communicate()

    assert JobState.of(run).status == Job.Status.RUNNING  # its last heartbeat is still fresh
    watch(run, until=lambda state: state.status == "stale", timeout=15)
    listed = site.run("syncjobs").stdout
    assert next(line for line in listed.splitlines() if line.startswith(run.label)).split()[1] == (
        "stale"
    )

    site.run("syncexport", "--tables", "content.Tag", "--output", site.backups)  # a new job

    run.refresh_from_db()
    assert run.status == Job.Status.FAILED and run.error.startswith("Stale: no heartbeat since")
    assert not Tag.objects.using(site.alias).exists()  # the killed transaction left nothing


def test_the_sync_cache_is_the_one_other_processes_are_given(settings):
    assert cache_url() == f"filecache://{settings.CACHES['sync']['LOCATION']}"
