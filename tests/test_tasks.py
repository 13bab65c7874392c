"""Exports and imports run by a real Celery worker (a ``celery worker`` process on a real
Redis, ``tests.workers``), handed over by ``syncexport --async`` / ``syncimport --async`` run
as commands of the site, as production runs them.

The site's database is one this test reads too: a SQLite file (the SQLite pass) or the
PostgreSQL test database (the PostgreSQL pass). One worker serves the module; a test that
kills it starts a new one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from django.db import connection, connections
from django.utils import timezone

from crearis.content.models import Tag
from sync.jobs.imports import start_import
from sync.jobs.lifecycle import JobState, find_job
from sync.models import BackupRecord, ImportRun, Job
from tests.archive_tools import rewrite_archive
from tests.cli import assert_refused, cli
from tests.conftest import run_command
from tests.fingerprint import fingerprint
from tests.job_tools import many_tags_archive, running_with_records, watch
from tests.sites import Site
from tests.workers import Worker, celery_client, redis_url, running_worker, worker_site

ALIAS = "default" if connection.vendor == "postgresql" else "sqlitefile"
BROKER = redis_url(5)
UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1
STALE_AFTER = 3  # seconds without a heartbeat: a killed worker's job shows stale soon
TAGS = 200_000  # an import or export of a few seconds

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", ALIAS])


@pytest.fixture(scope="module")
def site(django_db_setup, tmp_path_factory) -> Site:
    folder = tmp_path_factory.mktemp("site")
    return worker_site(ALIAS, folder, BROKER, SYNC_JOB_STALE_AFTER=str(STALE_AFTER))


@pytest.fixture(scope="module")
def module_worker(site) -> Worker:
    """Two pool processes: a task delivered again while its job runs meets the job running."""
    with running_worker(site, "--concurrency=2") as worker:
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


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory) -> Path:
    return many_tags_archive(tmp_path_factory.mktemp("archives") / "small.backup.tar", 100)


def add_tags(alias: str, count: int) -> None:
    """``count`` tags (tag-1…) in one statement: faster than any import."""
    now = timezone.now()
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
            "INSERT INTO content_tag (name, description, name_i18n, desc_i18n, created_at, "
            "updated_at) SELECT 'tag-' || i, '', '{}', '{}', %s, %s FROM n",
            [count, now, now],
        )


def job_named(site: Site, name: str) -> Job:
    return find_job(name, site.alias)


def handed_over(site: Site, *args: str | Path) -> Job:
    """Run ``syncexport``/``syncimport`` ARGS --async as a command of the site; its job."""
    done = site.run(*args, "--async", "--quiet")
    return job_named(site, done.stdout.strip())


def named_as_the_worker_names_it(job: Job) -> Job:
    """A job created in this process, whose database the site's processes call default."""
    type(job).objects.using(job.database).filter(pk=job.pk).update(database="default")
    return job


def tag_names(site: Site) -> list[str]:
    return sorted(Tag.objects.using(site.alias).values_list("name", flat=True))


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
    assert f"{name} succeeded." in followed.stdout
    assert backup.status == Job.Status.SUCCEEDED and backup.task_id
    assert worker.wait_for_log(f"Task sync.export[{backup.task_id}] succeeded")
    assert backup.storage_path == backup.file_name  # a name in the archive storage
    run_command("syncverify", site.backups / backup.file_name)
    assert backup.counts["content.Tag"] == len(exported)

    Tag.objects.using(site.alias).filter(name__endswith="7").delete()
    Tag.objects.using(site.alias).create(name="not in the archive")
    run = handed_over(site, "syncimport", backup.file_name, "--no-input")  # named as stored
    watch(run, until=ended)

    assert isinstance(run, ImportRun) and run.status == Job.Status.SUCCEEDED, run.error
    assert tag_names(site) == exported


def test_a_worker_run_import_is_watched_and_a_second_delivery_while_it_runs_does_nothing(
    site, worker, tags_archive
):
    run = handed_over(site, "syncimport", tags_archive, "--no-input")
    states = watch(run, until=running_with_records)
    again = celery_client(site).send_task("sync.import", [run.pk, "default"]).get(timeout=60)
    states += watch(run, until=ended)

    assert (again["executed"], again["status"]) == (False, Job.Status.RUNNING)
    assert again["reason"].startswith(f"{run.label} is running elsewhere (pid {run.pid} on ")
    running = [state.done for state in states if running_with_records(state)]
    assert len(set(running)) >= 2, f"progress did not advance while it ran: {running}"
    assert running == sorted(running) and {s.total for s in states if s.done} == {TAGS}
    assert states[-1].status == Job.Status.SUCCEEDED, states[-1].error
    assert Tag.objects.using(site.alias).count() == TAGS


def test_a_worker_run_import_is_cancelled_from_another_process(site, worker, tags_archive):
    run_command("syncseed", database=site.alias)
    before = tag_names(site)
    run = handed_over(site, "syncimport", tags_archive, "--no-input")
    watch(run, until=running_with_records)

    run_command("syncjobs", "--cancel", run.label, database=site.alias)
    followed = cli("syncjobs", "--watch", run.label, "--interval", "0.1", database=site.alias)

    assert followed.status == 1
    assert followed.error == f"{run.label} cancelled: Cancelled on request; nothing was changed."
    assert tag_names(site) == before


def test_a_killed_worker_leaves_the_database_as_it_was_and_no_archive(
    site, worker, tags_archive, small_archive, settings, tmp_path
):
    settings.SYNC_JOB_STALE_AFTER = STALE_AFTER  # as the site's processes have it
    run_command("syncseed", database=site.alias)
    before = tag_names(site)
    killed_import = handed_over(site, "syncimport", tags_archive, "--no-input")
    watch(killed_import, until=running_with_records)

    worker.kill()

    watch(killed_import, until=lambda state: state.status == "stale", timeout=STALE_AFTER + 10)
    assert tag_names(site) == before  # the database rolled the killed transaction back
    worker.start()
    next_import = handed_over(site, "syncimport", small_archive, "--no-input")
    assert watch(next_import, until=ended)[-1].status == Job.Status.SUCCEEDED  # the lock is free
    assert Tag.objects.using(site.alias).count() == 100
    killed_import.refresh_from_db()
    assert killed_import.status == Job.Status.FAILED
    assert killed_import.error.startswith("Stale: no heartbeat since")

    add_tags(site.alias, TAGS)
    killed_export = handed_over(site, "syncexport", "--tables", "content.Tag", "--output", tmp_path)
    watch(killed_export, until=running_with_records)

    worker.kill()

    watch(killed_export, until=lambda state: state.status == "stale", timeout=STALE_AFTER + 10)
    killed_export.refresh_from_db()
    assert killed_export.file_name and not (tmp_path / killed_export.file_name).exists()
    worker.start()
    next_export = handed_over(
        site, "syncexport", "--tables", "content.Status", "--output", tmp_path
    )
    assert watch(next_export, until=ended)[-1].status == Job.Status.SUCCEEDED
    killed_export.refresh_from_db()
    assert killed_export.status == Job.Status.FAILED
    assert killed_export.error.startswith("Stale: no heartbeat since")
    assert [path.name for path in tmp_path.iterdir()] == [next_export.file_name]


def test_a_task_delivered_again_after_its_job_ended_does_nothing(site, worker, tmp_path):
    backup = handed_over(site, "syncexport", "--tables", "content.Tag", "--output", tmp_path)
    watch(backup, until=ended)

    again = celery_client(site).send_task("sync.export", [backup.pk, "default"]).get(timeout=60)

    assert (again["executed"], again["status"]) == (False, Job.Status.SUCCEEDED)
    assert again["reason"] == f"{backup.label} has already ended (succeeded); not run again."
    assert [path.name for path in tmp_path.iterdir()] == [backup.file_name]
    assert BackupRecord.objects.using(site.alias).count() == 1


def test_an_import_reaching_the_soft_time_limit_fails_and_is_rolled_back(
    site, worker, tags_archive
):
    run_command("syncseed", database=site.alias)
    before = tag_names(site)
    run = named_as_the_worker_names_it(start_import(tags_archive, using=site.alias))

    outcome = (
        celery_client(site)
        .send_task("sync.import", [run.pk, "default"], soft_time_limit=1, time_limit=60)
        .get(timeout=60)
    )

    run.refresh_from_db()
    assert (outcome["executed"], run.status) == (True, Job.Status.FAILED)
    assert run.error == (
        "Stopped: the import ran longer than its task's soft time limit "
        "(SYNC_TASK_SOFT_TIME_LIMIT); nothing was changed."
    )
    assert tag_names(site) == before


def hostile(small_archive: Path, folder: Path, kind: str) -> Path:
    """``small_archive`` cut in half, or with a value no field can hold."""
    if kind == "truncated":
        data = small_archive.read_bytes()
        (folder / "cut.backup.tar").write_bytes(data[: len(data) // 2])
        return folder / "cut.backup.tar"

    def spoil(label, records):
        return [dict(records[0], created_at="yesterday"), *records[1:]]

    return rewrite_archive(small_archive, folder / "bad.backup.tar.gz", edit_records=spoil)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("truncated", "cut.backup.tar is corrupt or truncated (unexpected end of data)."),
        ("bad-value", "content.Tag 'tag-0000000': field 'created_at': bad value 'yesterday' ("),
    ],
    ids=["truncated", "bad-value"],
)
def test_a_hostile_archive_fails_its_worker_job_in_one_line(
    site, worker, small_archive, tmp_path, kind, expected
):
    run_command("syncseed", database=site.alias)
    before = fingerprint(site.alias)

    run = handed_over(site, "syncimport", hostile(small_archive, tmp_path, kind), "--no-input")
    watch(run, until=ended)

    run.refresh_from_db()
    assert run.status == Job.Status.FAILED and run.error.startswith(expected)
    assert "\n" not in run.error and "Traceback" not in run.error
    assert fingerprint(site.alias) == before


def test_a_broker_that_cannot_be_reached_fails_the_job_in_one_line(site):
    unreachable = replace(site, settings=site.settings | {"CELERY_BROKER_URL": UNREACHABLE})

    done = unreachable.run("syncexport", "--async", check=False)

    backup = BackupRecord.objects.using(site.alias).get()
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"CommandError: Could not hand {backup.label} to a worker: no broker answered "
        "(Error 111 connecting to 127.0.0.1:1. Connection refused.)."
    )
    assert (backup.status, backup.error_detail) == (Job.Status.FAILED, {"reason": "broker"})


def test_an_async_import_of_a_missing_archive_is_refused_before_any_job_exists(site, tmp_path):
    missing = tmp_path / "gone.backup.tar.gz"

    done = site.run("syncimport", missing, "--async", "--no-input", check=False)

    assert done.returncode == 1
    assert done.stderr.strip() == f"CommandError: There is no archive at {missing}."
    assert not ImportRun.objects.using(site.alias).exists()


def test_async_is_refused_without_a_broker():
    assert_refused(
        "--async",
        command="syncexport",
        expected="--async: no Celery broker is configured (CELERY_BROKER_URL is not set)",
    )
    assert not BackupRecord.objects.exists()


def test_an_async_import_must_not_need_to_ask(tags_archive):
    assert_refused(
        tags_archive, "--async", expected="--async cannot ask for confirmation: add --no-input"
    )
    assert not ImportRun.objects.exists()
