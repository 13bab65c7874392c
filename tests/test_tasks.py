"""Exports and imports run by a real Celery worker (a ``celery worker`` process on a real
Redis, ``tests.workers``), handed over by ``syncexport --async`` / ``syncimport --async`` run
as commands of the site, as production runs them.

The site's database is one this test reads too: a SQLite file (the SQLite pass) or the
PostgreSQL test database (the PostgreSQL pass). One worker serves the module; a test that
kills it starts a new one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import connection

from crearis.content.models import Tag
from sync.jobs.lifecycle import JobState, find_job
from sync.models import BackupRecord, ImportRun, Job
from tests.conftest import run_command
from tests.job_tools import many_tags_archive
from tests.sites import Site
from tests.workers import Worker, redis_url, running_worker, worker_site

ALIAS = "default" if connection.vendor == "postgresql" else "sqlitefile"
BROKER = redis_url(5)
STALE_AFTER = 3  # seconds without a heartbeat: a killed worker's job shows stale soon
TAGS = 300_000  # an import of a few seconds

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", ALIAS])


@pytest.fixture(scope="module")
def site(django_db_setup, tmp_path_factory) -> Site:
    folder = tmp_path_factory.mktemp("site")
    return worker_site(ALIAS, folder, BROKER, SYNC_JOB_STALE_AFTER=str(STALE_AFTER))


@pytest.fixture(scope="module")
def module_worker(site) -> Worker:
    with running_worker(site) as worker:
        yield worker


@pytest.fixture
def worker(module_worker) -> Worker:
    """The module's worker, started again if a test killed it."""
    if not module_worker.alive():
        module_worker.start()
    return module_worker


@pytest.fixture(scope="module")
def tags_archive(tmp_path_factory) -> Path:
    return many_tags_archive(tmp_path_factory.mktemp("archives") / "tags.backup.tar", TAGS)


def job_named(site: Site, name: str) -> Job:
    return find_job(name, site.alias)


def tag_names(site: Site) -> list[str]:
    return sorted(Tag.objects.using(site.alias).values_list("name", flat=True))


def watch(job: Job, until, timeout: float = 120) -> list[JobState]:
    """The job as another process sees it (row and sync cache), read every 50 ms until
    ``until(state)``; every state read."""
    states = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        states.append(JobState.of(job))
        if until(states[-1]):
            return states
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s; last: {states[-1:]}")


def ended(state: JobState) -> bool:
    return state.status not in (Job.Status.QUEUED, Job.Status.RUNNING)


def test_an_async_export_runs_on_the_worker_and_an_async_import_loads_it(site, worker):
    run_command("syncseed", database=site.alias)
    Tag.objects.using(site.alias).bulk_create(Tag(name=f"tag {n}") for n in range(50))
    exported = tag_names(site)

    handed = site.run("syncexport", "--async")
    name = handed.stdout.strip()
    followed = site.run("syncjobs", "--watch", name, "--interval", "0.2")

    backup = job_named(site, name)
    assert isinstance(backup, BackupRecord) and backup.status == Job.Status.SUCCEEDED
    assert f"Task sync.export[{backup.task_id}] succeeded" in worker.wait_for_log(
        backup.task_id + "] succeeded"
    )
    assert f"{name} succeeded." in followed.stdout
    archive = Path(backup.storage_path)
    assert archive.parent == site.backups and archive.is_file()
    site.run("syncverify", archive)
    assert backup.counts["content.Tag"] == Tag.objects.using(site.alias).count()

    Tag.objects.using(site.alias).filter(name__endswith="7").delete()
    Tag.objects.using(site.alias).create(name="not in the archive")
    handed = site.run("syncimport", archive, "--async", "--no-input")
    name = handed.stdout.strip()
    site.run("syncjobs", "--watch", name, "--interval", "0.2")

    run = job_named(site, name)
    assert isinstance(run, ImportRun) and run.status == Job.Status.SUCCEEDED, run.error
    assert tag_names(site) == exported
