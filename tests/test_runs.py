"""run_import as users meet it: runs whose process died, refusals that name the import that
really runs, and a user who stops an import (at its prompt, or while it writes)."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
from django.urls import reverse

from crearis.content.models import Tag
from sync.exporter import export
from sync.models import BackupRecord, ImportRun, mark_stale
from sync.runs import INTERRUPTED, INTERRUPTED_BY_USER, run_import
from tests.cli import assert_refused
from tests.fingerprint import fingerprint
from tests.test_importer import lock_held_elsewhere

pytestmark = pytest.mark.django_db

HERE = socket.gethostname()


def dead_pid() -> int:
    """The id of a process of this host that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def tags_archive(seeded, tmp_path):
    """An archive of the tags, and a database whose tags differ from it."""
    archive = export(tables=["content.Tag"], output_dir=tmp_path).path
    Tag.objects.update(description="edited here")
    return archive


def import_run(pid: int, hostname: str = HERE, archive: str = "a.backup.tar.gz") -> ImportRun:
    return ImportRun.objects.create(archive=archive, mode="replace", pid=pid, hostname=hostname)


# -- runs whose process is gone ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields"),
    [(BackupRecord, {}), (ImportRun, {"archive": "a.backup.tar.gz", "mode": "replace"})],
)
def test_backups_and_imports_tell_dead_runs_alike(model, fields):
    alive = model.objects.create(pid=os.getpid(), hostname=HERE, **fields)
    dead = model.objects.create(pid=dead_pid(), hostname=HERE, **fields)
    elsewhere = model.objects.create(pid=dead.pid, hostname="another-host", **fields)

    assert [alive.is_stale, dead.is_stale, elsewhere.is_stale] == [False, True, False]
    assert mark_stale(model.objects.all(), "Interrupted.") == 1
    assert dict(model.objects.values_list("pk", "status")) == {
        alive.pk: "running",
        dead.pk: "failed",
        elsewhere.pk: "running",  # its host alone can tell
    }
    dead.refresh_from_db()
    assert (dead.error, dead.is_stale) == ("Interrupted.", False)
    assert dead.finished_at is not None


def test_the_next_import_marks_a_dead_import_failed(tags_archive):
    dead = import_run(dead_pid())

    _, run = run_import(tags_archive)

    dead.refresh_from_db()
    assert (dead.status, dead.error) == (ImportRun.Status.FAILED, INTERRUPTED)
    assert run.status == ImportRun.Status.SUCCEEDED
    assert set(Tag.objects.values_list("description", flat=True)) != {"edited here"}


def test_a_refusal_names_the_live_import_never_a_dead_one(tags_archive):
    import_run(dead_pid(), archive="dead.backup.tar.gz")
    live = import_run(os.getpid(), archive="live.backup.tar.gz")

    with lock_held_elsewhere(), pytest.raises(Exception) as refused:
        run_import(tags_archive)

    assert f"Refused: import #{live.pk} of live.backup.tar.gz" in str(refused.value)
    assert "dead" not in str(refused.value)


def test_a_refusal_with_only_dead_runs_recorded_names_no_process(tags_archive):
    import_run(dead_pid(), archive="dead.backup.tar.gz")

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
        run_import(tags_archive, progress=interrupt)

    assert fingerprint() == before
    run = ImportRun.objects.get()
    assert (run.status, run.error) == (ImportRun.Status.FAILED, INTERRUPTED_BY_USER)


def test_the_admin_shows_a_dead_import_as_stale(admin_client):
    import_run(dead_pid(), archive="dead.backup.tar.gz")
    import_run(os.getpid(), archive="live.backup.tar.gz")

    listing = admin_client.get(reverse("admin:sync_importrun_changelist")).content.decode()

    assert listing.count("stale (its process is gone)") == 1
    assert listing.count(">running<") == 1
