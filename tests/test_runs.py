"""run_import as users meet it: runs whose process died, refusals that name the import that
really runs, and a user who stops an import (at its prompt, or while it writes)."""

from __future__ import annotations

import os
import signal
import socket
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from crearis.content.models import Tag
from sync.jobs.channel import JobChannel, Progress
from sync.jobs.exports import export
from sync.jobs.imports import INTERRUPTED, run_import
from sync.jobs.lifecycle import mark_stale_jobs
from sync.management.progress import ProgressBar
from sync.models import BackupRecord, ImportRun, Job
from tests.cli import assert_refused, cli
from tests.fingerprint import fingerprint
from tests.job_tools import reporter_calling
from tests.locks import lock_held_elsewhere

pytestmark = pytest.mark.django_db

HERE = socket.gethostname()


@pytest.fixture
def tags_archive(seeded, tmp_path):
    """An archive of the tags, and a database whose tags differ from it."""
    archive = export(tables=["content.Tag"], output_dir=tmp_path).path
    Tag.objects.update(description="edited here")
    return archive


def running(model=ImportRun, alive: bool = True, hostname: str = HERE, **fields) -> Job:
    """A job recorded as running: ``alive``, its process beats (a fresh heartbeat); else it
    went silent five minutes ago."""
    if model is ImportRun:
        fields = {"archive": "a.backup.tar.gz", "mode": "replace"} | fields
    started = timezone.now() - timedelta(minutes=5)
    job = model.objects.create(
        status=Job.Status.RUNNING, pid=os.getpid(), hostname=hostname, started_at=started, **fields
    )
    if alive:
        JobChannel(job.token).publish(Progress("reading", heartbeat=time.time()))
    return job


def import_run(alive: bool, archive: str) -> ImportRun:
    return running(ImportRun, alive, archive=archive)


# -- runs whose process is gone ------------------------------------------------------------------


@pytest.mark.parametrize("model", [BackupRecord, ImportRun])
def test_backups_and_imports_tell_dead_runs_alike(model):
    alive = running(model)
    dead = running(model, alive=False)
    elsewhere = running(model, hostname="another-host")  # its pid means nothing here

    assert [alive.is_stale, dead.is_stale, elsewhere.is_stale] == [False, True, False]
    assert [job.pk for job in mark_stale_jobs("default")] == [dead.pk]
    assert dict(model.objects.values_list("pk", "status")) == {
        alive.pk: "running",
        dead.pk: "failed",
        elsewhere.pk: "running",  # its heartbeat says it is alive
    }
    dead.refresh_from_db()
    assert dead.error.startswith("Stale: no heartbeat since") and not dead.is_stale
    assert dead.finished_at is not None


def test_the_next_import_marks_a_dead_import_failed(tags_archive):
    """Holding the import lock, an import knows no other one runs: one recorded as running
    is dead, even while its heartbeat is still fresh."""
    dead = running(ImportRun, alive=True)

    _, run = run_import(tags_archive)

    dead.refresh_from_db()
    assert (dead.status, dead.error) == (ImportRun.Status.FAILED, INTERRUPTED)
    assert run.status == ImportRun.Status.SUCCEEDED
    assert set(Tag.objects.values_list("description", flat=True)) != {"edited here"}


def test_a_refusal_names_the_live_import_never_a_dead_one(tags_archive):
    import_run(alive=False, archive="dead.backup.tar.gz")
    live = import_run(alive=True, archive="live.backup.tar.gz")

    with lock_held_elsewhere(), pytest.raises(Exception) as refused:
        run_import(tags_archive)

    assert f"Refused: {live.label} (replace import of live.backup.tar.gz" in str(refused.value)
    assert "dead" not in str(refused.value)


def test_a_refusal_with_only_dead_runs_recorded_names_no_process(tags_archive):
    import_run(alive=False, archive="dead.backup.tar.gz")

    with lock_held_elsewhere(), pytest.raises(Exception) as refused:
        run_import(tags_archive)

    assert str(refused.value) == (
        "Refused: another import is running on database 'default'; try again when it ends."
    )


# -- a user who stops the import ------------------------------------------------------------------


@pytest.mark.parametrize("answer", [EOFError, KeyboardInterrupt], ids=["eof", "ctrl-c"])
def test_no_answer_at_the_prompt_cancels_the_import(tags_archive, monkeypatch, answer):
    def no_answer(prompt: str) -> str:
        raise answer

    monkeypatch.setattr("builtins.input", no_answer)

    assert_refused(str(tags_archive), expected="Import cancelled; nothing was changed.")
    assert list(ImportRun.objects.values_list("dry_run", "status")) == [(True, "succeeded")]


def test_an_interrupted_import_is_rolled_back_and_recorded(tags_archive):
    before = fingerprint()

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_import(tags_archive, reporter=reporter_calling(interrupt))

    assert fingerprint() == before
    run = ImportRun.objects.get()
    assert (run.status, run.error) == (
        ImportRun.Status.CANCELLED,
        "Interrupted (Ctrl-C) before the import finished; nothing was changed.",
    )


def test_the_admin_shows_a_dead_import_as_stale(admin_client):
    import_run(alive=False, archive="dead.backup.tar.gz")
    import_run(alive=True, archive="live.backup.tar.gz")

    listing = admin_client.get(reverse("admin:sync_importrun_changelist")).content.decode()

    assert listing.count("stale (its process is gone)") == 1
    assert listing.count(">running <progress") == 1  # a running job shows its progress bar


def signal_at_first_step(monkeypatch, signum: int) -> None:
    """Deliver ``signum`` to this process as a command's work first advances (its progress
    bar's first step): Ctrl-C at a terminal, or SIGTERM from ``kill``/``docker stop``."""

    def advance(bar, count: int) -> None:
        signal.raise_signal(signum)

    monkeypatch.setattr(ProgressBar, "advance", advance)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("command", ["syncexport", "syncimport"])
def test_a_command_stopped_by_a_signal_says_so_in_one_line(
    tags_archive, tmp_path, settings, monkeypatch, command, signum
):
    """The job ends cancelled naming the signal, nothing is left behind (no archive, no
    partial file, no change), and the command's last word is one line, not a traceback."""
    settings.BACKUP_DIR = str(tmp_path / "backups")
    before = fingerprint()
    signal_at_first_step(monkeypatch, signum)

    if command == "syncexport":
        outcome = cli("syncexport", "--tables", "content.Tag")
        job, left = BackupRecord.objects.latest("created_at"), "no archive was written"
    else:
        outcome = cli("syncimport", str(tags_archive), "--no-input")
        job, left = ImportRun.objects.latest("created_at"), "nothing was changed"

    assert (outcome.status, outcome.error) == (1, f"{command[4:].title()} interrupted; {left}.")
    how = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    assert (job.status, job.error) == (
        Job.Status.CANCELLED,
        f"Interrupted ({how}) before the {job.KIND} finished; {left}.",
    )
    assert fingerprint() == before
    assert [p.name for p in (tmp_path / "backups").rglob("*") if p.is_file()] == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back


def raising(signum: int):
    def deliver(*args, **kwargs):
        signal.raise_signal(signum)

    return deliver


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize(
    ("command", "args", "engine", "expected"),
    [
        ("syncverify", ["archive"], "verify_archive", "the archive was not checked to its end."),
        ("syncinspect", ["archive"], "read_index", "Interrupted; with --fix, what was recorded"),
        ("syncrotate", ["--keep-last", "1"], "plan_rotation", "Rotation interrupted; the "),
        ("syncplan", ["import-1"], "find_job", "Interrupted."),
        ("syncseed", [], "seed_system_data", "Interrupted."),
    ],
    ids=["syncverify", "syncinspect", "syncrotate", "syncplan", "syncseed"],
)
def test_every_command_stopped_by_a_signal_says_so_in_one_line(
    tags_archive, monkeypatch, command, args, engine, expected, signum
):
    """Interrupted while its engine works (here: as it starts), a command ends with one line
    saying what it left, exit status 1, never a traceback."""
    monkeypatch.setattr(f"sync.management.commands.{command}.{engine}", raising(signum))
    args = [str(tags_archive) if arg == "archive" else arg for arg in args]

    outcome = cli(command, *args)

    assert outcome.status == 1 and expected in outcome.error
    assert "\n" not in outcome.error
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
