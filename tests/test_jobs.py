"""Jobs in one process: the lifecycle of export and import jobs, cancel, staleness by
heartbeat, the job_finished signal, and syncjobs as a user runs it. Jobs watched and cancelled
from other processes: tests/test_jobs_across_processes.py."""

from __future__ import annotations

import fcntl
import signal
import socket
import sqlite3
import time
from contextlib import contextmanager
from datetime import timedelta

import orjson
import pytest
from django.db import connections, transaction
from django.utils import timezone

from crearis.content.models import Tag
from sync.importer import ImportFailed
from sync.jobs.channel import JobChannel, Progress
from sync.jobs.exports import execute_export, export, start_export
from sync.jobs.imports import execute_import, run_import, start_import
from sync.jobs.lifecycle import (
    JobError,
    JobState,
    find_job,
    finish,
    is_stale,
    mark_stale_jobs,
    request_cancel,
)
from sync.jobs.reporter import HEARTBEAT_SECONDS, JobCancelled, JobReporter
from sync.locking import _sqlite_lock_path
from sync.models import BackupRecord, ImportRun, Job
from sync.signals import job_finished
from tests.cli import assert_refused, cli
from tests.fingerprint import fingerprint
from tests.job_tools import reporter_calling

pytestmark = pytest.mark.django_db


@contextmanager
def finished_jobs():
    """The (name, status) of every job_finished signal sent inside the block."""
    seen: list[tuple[str, str]] = []

    def record(sender, job, **kwargs):
        seen.append((job.label, job.status))

    job_finished.connect(record)
    try:
        yield seen
    finally:
        job_finished.disconnect(record)


@pytest.fixture
def tags_archive(seeded, tmp_path):
    return export(tables=["content.Tag"], output_dir=tmp_path / "archives").path


def cancelling(job_model: type[Job], when: str = "advance", phase: str = "") -> JobReporter:
    """A reporter that asks the running job it reports for to stop — at the engine's first
    step (``when="advance"``) or when ``phase`` begins — and waits there until its heartbeat
    has read the request, as it reads one from another process."""
    asked = []

    def ask(*args) -> None:
        if asked or (when == "phase" and args[0] != phase):
            return
        asked.append(request_cancel(job_model.objects.get(status=Job.Status.RUNNING)))
        deadline = time.monotonic() + 20 * HEARTBEAT_SECONDS
        while time.monotonic() < deadline:
            try:
                reporter.check_cancelled()
            except JobCancelled:
                return  # the engine raises it at its own next check
            time.sleep(0.05)

    reporter = reporter_calling(**{f"on_{when}": ask})
    return reporter


def failed_import(tmp_path) -> ImportRun:
    broken = tmp_path / "broken.backup.tar.gz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(ImportFailed, match="broken"):
        run_import(broken)
    return ImportRun.objects.latest("pk")


# -- the lifecycle -----------------------------------------------------------------------------


def test_an_import_job_is_queued_with_its_options_then_executed_from_its_id(
    tags_archive, django_capture_on_commit_callbacks
):
    Tag.objects.create(name="only here")
    run = start_import(tags_archive, mode="update", dry_run=True, started_by="a test")

    assert run.status == Job.Status.QUEUED and run.started_at is None
    assert (run.archive, run.mode, run.dry_run) == (str(tags_archive), "update", True)
    assert run.label == f"import-{run.pk}"

    with finished_jobs() as seen, django_capture_on_commit_callbacks(execute=True):
        result = execute_import(run.pk)

    run.refresh_from_db()
    assert result.dry_run and result.mode == "update"
    assert run.status == Job.Status.SUCCEEDED
    assert run.created_at <= run.started_at <= run.finished_at
    assert run.progress["done"] == run.progress["total"] == Tag.objects.count() - 1
    assert run.progress["heartbeat"] is None  # final state, not a live one
    assert seen == [(run.label, "succeeded")]


def test_an_export_job_is_executed_from_its_id_alone(seeded, tmp_path):
    backup = start_export(tables=["content.Tag"], compression="zst", output_dir=tmp_path)

    assert backup.status == Job.Status.QUEUED and backup.file_name == ""
    assert (backup.tables, backup.compression) == (["content.Tag"], "zst")

    result = execute_export(backup.pk)

    backup.refresh_from_db()
    assert backup.status == Job.Status.SUCCEEDED
    assert result.path == tmp_path / backup.file_name and result.path.exists()
    assert backup.counts == {"content.Tag": Tag.objects.count()}
    assert backup.progress["phase"] == "compressing"


def test_a_job_runs_once(tags_archive):
    """Safe to hand to two workers, or to run twice: only a queued job is executed."""
    run = start_import(tags_archive)
    execute_import(run.pk)

    with pytest.raises(JobError, match=rf"import-{run.pk} is succeeded: only a queued job"):
        execute_import(run.pk)


def test_bad_options_are_refused_before_a_job_exists(tmp_path):
    with pytest.raises(Exception, match="Unknown mode 'merge'"):
        start_import(tmp_path / "x.backup.tar.gz", mode="merge")
    with pytest.raises(Exception, match="between 0 and 9"):
        start_export(compression="gz", level=12)
    assert not ImportRun.objects.exists() and not BackupRecord.objects.exists()


# -- cancel ------------------------------------------------------------------------------------


def test_a_queued_job_is_cancelled_at_once_and_never_runs(tags_archive):
    Tag.objects.create(name="only here")
    run = start_import(tags_archive)
    before = fingerprint()

    request_cancel(run)

    assert run.status == Job.Status.CANCELLED and run.finished_at is not None
    with pytest.raises(JobError, match="is cancelled: only a queued job can be executed"):
        execute_import(run.pk)
    assert fingerprint() == before


def test_a_cancelled_import_rolls_back_completely(tags_archive):
    Tag.objects.create(name="only here")  # replace mode would delete it
    Tag.objects.filter(name="teen").update(description="edited here")
    before = fingerprint()

    with pytest.raises(JobCancelled, match=r"import-\d+ cancelled on request; nothing was"):
        run_import(tags_archive, reporter=cancelling(ImportRun))

    assert fingerprint() == before
    run = ImportRun.objects.get()
    assert run.status == Job.Status.CANCELLED
    assert run.error == "Cancelled on request; nothing was changed."
    assert run.error_detail == {"reason": "cancelled"}


def test_a_cancelled_export_leaves_no_archive(demo, tmp_path):
    with pytest.raises(JobCancelled, match=r"export-\d+ cancelled on request"):
        export(output_dir=tmp_path, reporter=cancelling(BackupRecord))

    assert list(tmp_path.iterdir()) == []  # no archive, no partial file, no spool
    backup = BackupRecord.objects.get()
    assert (backup.status, backup.progress["phase"]) == (Job.Status.CANCELLED, "reading")


def test_an_export_is_cancelled_while_compressing(demo, tmp_path):
    with pytest.raises(JobCancelled):
        export(
            output_dir=tmp_path,
            compression="xz",
            reporter=cancelling(BackupRecord, when="phase", phase="compressing"),
        )

    assert list(tmp_path.iterdir()) == []
    assert BackupRecord.objects.get().progress["phase"] == "compressing"


def test_an_ended_job_cannot_be_cancelled(tags_archive):
    _, run = run_import(tags_archive)
    with pytest.raises(JobError, match=rf"import-{run.pk} has already ended \(succeeded\)"):
        request_cancel(run)


# -- stale jobs --------------------------------------------------------------------------------


def running_job(hostname: str, heartbeat_age: float | None, **fields) -> ImportRun:
    run = ImportRun.objects.create(
        archive="a.backup.tar.gz",
        mode="replace",
        status=Job.Status.RUNNING,
        hostname=hostname,
        pid=999999,  # nobody's, on this host
        started_at=timezone.now(),
        **fields,
    )
    if heartbeat_age is not None:
        beat = time.time() - heartbeat_age
        JobChannel(run.token).publish(Progress("reading", "content.Tag", 10, 20, beat))
    return run


def test_a_job_with_a_fresh_heartbeat_is_alive_whatever_its_host_or_pid(settings):
    settings.SYNC_JOB_STALE_AFTER = 60
    elsewhere = running_job("worker-container", heartbeat_age=1)

    assert not is_stale(elsewhere)
    assert mark_stale_jobs("default") == []
    elsewhere.refresh_from_db()
    assert elsewhere.status == Job.Status.RUNNING
    assert JobState.of(elsewhere).progress_text == "reading · content.Tag · 10/20 records"


def test_a_job_whose_heartbeat_stopped_is_stale_then_marked_failed(
    settings, django_capture_on_commit_callbacks
):
    settings.SYNC_JOB_STALE_AFTER = 60
    silent = running_job("worker-container", heartbeat_age=120)
    never_beat = running_job("web-container", heartbeat_age=None)
    started = never_beat.started_at - timedelta(minutes=5)
    ImportRun.objects.filter(pk=never_beat.pk).update(started_at=started)
    never_beat.refresh_from_db()
    assert JobState.of(silent).status == "stale"

    with finished_jobs() as seen, django_capture_on_commit_callbacks(execute=True):
        marked = mark_stale_jobs("default")

    assert sorted(job.pk for job in marked) == sorted([silent.pk, never_beat.pk])
    silent.refresh_from_db()
    assert silent.status == Job.Status.FAILED and silent.error_detail == {"reason": "stale"}
    assert silent.error.startswith("Stale: no heartbeat since ")
    assert "pid 999999 on worker-container" in silent.error
    assert silent.progress["phase"] == "reading"  # where it was when it went silent
    assert sorted(seen) == sorted([(silent.label, "failed"), (never_beat.label, "failed")])


def test_a_queued_job_is_never_stale(settings):
    settings.SYNC_JOB_STALE_AFTER = 60
    run = ImportRun.objects.create(archive="a", mode="replace")
    ImportRun.objects.filter(pk=run.pk).update(created_at=run.created_at - timedelta(days=1))
    run.refresh_from_db()
    assert not is_stale(run) and mark_stale_jobs("default") == []


@pytest.mark.django_db(transaction=True, databases=["default", "sqlitefile"])
def test_a_queued_sqlite_job_refused_while_the_import_writes_ends_failed(tmp_path):
    """SQLite: the import that holds the lock also holds the database's write lock, so the
    refusal cannot be written at once; the job shows failed and is recorded so later."""
    run = start_import(tmp_path / "a.backup.tar.gz", using="sqlitefile")
    database = connections["sqlitefile"].settings_dict["NAME"]
    with finished_jobs() as seen:
        with open(_sqlite_lock_path("sqlitefile"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the other import's lock…
            writing = sqlite3.connect(database, isolation_level=None)
            writing.execute("BEGIN IMMEDIATE")  # …and its open write transaction
            try:
                with pytest.raises(ImportFailed, match="Refused: another import is running"):
                    execute_import(run.pk, using="sqlitefile")
                run.refresh_from_db()
                assert run.status == Job.Status.QUEUED  # its row could not be written
                shown = JobState.of(run)
                assert shown.status == "failed" and shown.error.startswith("Refused: ")
            finally:
                writing.rollback()
                writing.close()
        assert seen == []
        marked = mark_stale_jobs("sqlitefile")  # as the next job started does (or its claim)

    assert [job.pk for job in marked] == [run.pk]
    run.refresh_from_db()
    assert run.status == Job.Status.FAILED and run.error_detail == {"reason": "refused"}
    assert run.error.startswith("Refused: another import is running on database 'sqlitefile'")
    assert seen == [(run.label, "failed")]
    assert mark_stale_jobs("sqlitefile") == [] and seen == [(run.label, "failed")]
    with pytest.raises(JobError, match="is failed: only a queued job can be executed"):
        execute_import(run.pk, using="sqlitefile")  # a refused job is not run later


def test_a_job_wrongly_marked_stale_announces_each_of_its_ends_once(
    settings, django_capture_on_commit_callbacks
):
    settings.SYNC_JOB_STALE_AFTER = 60
    fails_anyway = running_job("worker-container", heartbeat_age=120)
    succeeds = running_job("worker-container", heartbeat_age=120)

    with finished_jobs() as seen, django_capture_on_commit_callbacks(execute=True):
        assert len(mark_stale_jobs("default")) == 2  # their cache was unreachable, say
        # … but their processes were alive, and end by themselves:
        finish(fails_anyway, Job.Status.FAILED, "its own error")
        finish(succeeds, Job.Status.SUCCEEDED)

    assert sorted(seen) == sorted(
        [
            (fails_anyway.label, "failed"),  # once, though its end was written twice
            (succeeds.label, "failed"),
            (succeeds.label, "succeeded"),  # a new end: a watcher hears of it
        ]
    )
    fails_anyway.refresh_from_db()
    succeeds.refresh_from_db()
    assert fails_anyway.error == "its own error" and succeeds.status == Job.Status.SUCCEEDED


# -- job_finished ------------------------------------------------------------------------------


def test_job_finished_is_sent_once_per_job_with_its_final_status(
    tags_archive, tmp_path, django_capture_on_commit_callbacks
):
    with finished_jobs() as seen, django_capture_on_commit_callbacks(execute=True):
        _, ok = run_import(tags_archive, dry_run=True)
        failed = failed_import(tmp_path)
        queued = start_import(tags_archive)
        request_cancel(queued)
        exported = export(tables=["content.Tag"], output_dir=tmp_path).backup

    assert seen == [
        (ok.label, "succeeded"),
        (failed.label, "failed"),
        (queued.label, "cancelled"),
        (exported.label, "succeeded"),
    ]


@pytest.mark.django_db(transaction=True)
def test_job_finished_is_sent_after_the_commit(tmp_path):
    from django.core.management import call_command

    call_command("syncseed", verbosity=0)
    with finished_jobs() as seen:
        with transaction.atomic():
            backup = export(tables=["content.Tag"], output_dir=tmp_path).backup
            assert seen == []  # recorded, but not committed yet
        assert seen == [(backup.label, "succeeded")]


# -- names -------------------------------------------------------------------------------------


def test_jobs_are_found_by_kind_and_number(tags_archive):
    _, run = run_import(tags_archive, dry_run=True)
    backup = BackupRecord.objects.get()  # the tags_archive export

    for name in (f"import-{run.pk}", f"IMPORT{run.pk}", f"import:{run.pk}", f" import-{run.pk} "):
        assert find_job(name) == run
    assert find_job(f"export-{backup.pk}") == backup
    with pytest.raises(JobError, match=r"is not a job name.*a number alone is not enough"):
        find_job(str(run.pk))
    with pytest.raises(JobError, match="There is no import-999 in database 'default'"):
        find_job("import-999")


# -- syncjobs ----------------------------------------------------------------------------------


def test_syncjobs_lists_jobs_of_both_kinds_with_status_and_progress(tags_archive, tmp_path):
    _, run = run_import(tags_archive, dry_run=True)
    queued = start_import(tags_archive, started_by="the admin")
    backup = BackupRecord.objects.get()

    outcome = cli("syncjobs")

    lines = outcome.out.splitlines()
    assert outcome.status == 0
    assert lines[0].split() == ["job", "status", "progress", "who", "started"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert set(by_name) == {queued.label, run.label, backup.label}
    total = Tag.objects.count()
    assert "succeeded" in by_name[run.label]
    assert f"done · {total}/{total} records" in by_name[run.label]
    assert "queued" in by_name[queued.label] and "waiting for a worker" in by_name[queued.label]
    assert "the admin" in by_name[queued.label]
    assert f"done · {total}/{total} records" in by_name[backup.label]
    assert [line.split()[0] for line in lines[1:]] == [queued.label, run.label, backup.label]


def test_syncjobs_json(tags_archive):
    _, run = run_import(tags_archive, dry_run=True)

    rows = orjson.loads(cli("syncjobs", "--json").out)

    assert [row["name"] for row in rows] == [run.label, f"export-{BackupRecord.objects.get().pk}"]
    assert rows[0]["status"] == "succeeded" and rows[0]["kind"] == "import"
    assert rows[0]["done"] == rows[0]["total"] == Tag.objects.count()


def test_syncjobs_cancel(tags_archive):
    queued = start_import(tags_archive)

    outcome = cli("syncjobs", "--cancel", queued.label)

    assert (outcome.status, outcome.out.strip()) == (0, f"{queued.label} was queued: cancelled.")
    queued.refresh_from_db()
    assert queued.status == Job.Status.CANCELLED


def test_syncjobs_cancel_of_a_running_job_asks_it_to_stop(settings):
    settings.SYNC_JOB_STALE_AFTER = 60
    run = running_job("worker-container", heartbeat_age=1)

    outcome = cli("syncjobs", "--cancel", f"import:{run.pk}")

    assert outcome.status == 0 and f"Cancel requested: {run.label} stops" in outcome.out
    assert JobChannel(run.token).cancel_requested()
    run.refresh_from_db()
    assert run.status == Job.Status.RUNNING  # until it reads the request


def test_syncjobs_cancel_of_a_stale_job_says_there_is_nothing_to_stop(settings):
    settings.SYNC_JOB_STALE_AFTER = 60
    run = running_job("worker-container", heartbeat_age=120)

    outcome = cli("syncjobs", "--cancel", run.label)

    assert outcome.status == 0
    assert f"{run.label} is stale: its process is gone, nothing is left to stop" in outcome.out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--cancel", "7"), "'7' is not a job name"),
        (("--cancel", "import-999"), "There is no import-999"),
        (("--watch", "export-999"), "There is no export-999"),
        (("--database", "nowhere"), "Unknown database alias 'nowhere'"),
    ],
)
def test_syncjobs_refuses_what_it_cannot_do(db, args, expected):
    assert_refused(*args, expected=expected, command="syncjobs")


def test_syncjobs_refuses_to_cancel_an_ended_job(tags_archive):
    _, run = run_import(tags_archive, dry_run=True)
    assert_refused(
        "--cancel", run.label, expected="has already ended (succeeded)", command="syncjobs"
    )


def test_syncjobs_watch_of_one_job_ends_with_its_status(tags_archive, tmp_path):
    _, ok = run_import(tags_archive, dry_run=True)
    failed = failed_import(tmp_path)

    done = cli("syncjobs", "--watch", ok.label)
    refused = cli("syncjobs", "--watch", failed.label)

    assert done.status == 0 and done.out.splitlines()[-1] == f"{ok.label} succeeded."
    assert refused.status == 1 and refused.error.startswith(f"{failed.label} failed: ")
    assert "broken.backup.tar.gz" in refused.error


def test_syncjobs_watch_of_a_stale_job_ends(settings):
    settings.SYNC_JOB_STALE_AFTER = 60
    run = running_job("worker-container", heartbeat_age=120)

    outcome = cli("syncjobs", "--watch", run.label, interval=0.01)

    assert outcome.status == 1 and f"{run.label} is stale" in outcome.error


def test_syncjobs_watch_of_the_list_ends_when_nothing_runs(tags_archive):
    _, run = run_import(tags_archive, dry_run=True)

    outcome = cli("syncjobs", "--watch", interval=0.01)

    assert outcome.status == 0 and run.label in outcome.out


# -- dispatch ----------------------------------------------------------------------------------


def test_without_a_broker_a_dispatched_job_of_either_kind_runs_inline(seeded, tmp_path):
    from sync.jobs.dispatch import dispatch

    backup = start_export(tables=["content.Tag"], output_dir=tmp_path)
    dispatch(backup)
    backup.refresh_from_db()
    assert backup.status == Job.Status.SUCCEEDED and (tmp_path / backup.file_name).exists()

    run = start_import(tmp_path / backup.file_name, mode="update", dry_run=True)
    dispatch(run)
    run.refresh_from_db()
    assert run.status == Job.Status.SUCCEEDED and run.counts["content.Tag"]["unchanged"] > 0


# -- the sync cache ----------------------------------------------------------------------------


def test_without_a_sync_cache_jobs_talk_through_a_file_cache_in_the_backup_dir(
    tags_archive, tmp_path
):
    from django.core.checks import run_checks
    from django.test import override_settings

    from sync.jobs.channel import sync_cache

    caches_without_sync = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    backups = tmp_path / "backups"
    with override_settings(CACHES=caches_without_sync, BACKUP_DIR=str(backups)):
        assert not [e for e in run_checks(tags=["caches"]) if e.id.startswith("sync.")]
        run = start_import(tags_archive, dry_run=True)
        channel = JobChannel(run.token)
        channel.publish(Progress(phase="reading", done=3, total=9))

        assert any((backups / ".sync-cache").iterdir())
        seen_by_another_cache = FileBasedCacheAt(backups / ".sync-cache")
        assert seen_by_another_cache.get(channel.progress_key) == {
            "phase": "reading",
            "table": "",
            "done": 3,
            "total": 9,
            "heartbeat": None,
        }
        assert sync_cache() is sync_cache()
        request_cancel(ImportRun.objects.get(pk=run.pk))  # a queued job: ends at once
        assert seen_by_another_cache.get(channel.progress_key) is None  # cleared at its end
    assert ImportRun.objects.get(pk=run.pk).status == Job.Status.CANCELLED


def FileBasedCacheAt(location):
    """A second, independent cache object on the same folder (as another process has)."""
    from django.core.cache.backends.filebased import FileBasedCache

    return FileBasedCache(str(location), {"KEY_PREFIX": "crearis-sync"})


def test_ctrl_c_while_watching_a_job_stops_the_watching_in_one_line(monkeypatch):
    run = running_job(socket.gethostname(), heartbeat_age=0)

    def ctrl_c(seconds: float) -> None:
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr("sync.management.commands.syncjobs.time.sleep", ctrl_c)
    outcome = cli("syncjobs", "--watch", run.label)

    assert (outcome.status, outcome.error) == (
        1,
        f"Stopped watching {run.label}, which goes on; stop it with: syncjobs --cancel {run.label}",
    )
    run.refresh_from_db()
    assert run.status == Job.Status.RUNNING
