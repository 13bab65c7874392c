"""Rotation against records and real archive files: syncrotate, what a run deletes and records,
and the refusals when the storage cannot be seen (sync.rotation, docs/rotation.md)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from sync.jobs.exports import export
from sync.models import BackupRecord, Job
from sync.rotation import Policy, apply_rotation, plan_rotation, rotate
from sync.signals import rotation_finished
from sync.storage import archive_storage
from tests.cli import cli

pytestmark = pytest.mark.django_db


@pytest.fixture
def archives(settings, tmp_path) -> Path:
    """The archive storage: a local folder of the test's own."""
    folder = tmp_path / "backups"
    folder.mkdir()
    settings.BACKUP_DIR = folder
    settings.STORAGES = {
        **settings.STORAGES,
        "sync": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(folder)},
        },
    }
    return folder


def backup(
    folder: Path, days_ago: float, status: str = Job.Status.SUCCEEDED, write: bool = True
) -> BackupRecord:
    """A backup record taken ``days_ago`` and, if ``write``, its archive file in ``folder``."""
    when = timezone.now() - timedelta(days=days_ago)
    path = folder / f"{when:%Y%m%dT%H%M%S%fZ}-full.backup.tar.gz"
    if write:
        path.write_bytes(b"an archive of " + str(days_ago).encode())
    return BackupRecord.objects.create(
        status=status,
        created_at=when,
        started_at=when,
        finished_at=None if status == Job.Status.RUNNING else when,
        file_name=path.name,
        storage_path=str(path.resolve()),
    )


def five_days(folder: Path) -> list[BackupRecord]:
    """One backup a day, the newest first."""
    return [backup(folder, days_ago) for days_ago in range(5)]


def on_disk(record: BackupRecord) -> bool:
    """Whether the record's archive is there: a name in the archive storage (as exports
    record them), or a local path (as older records, and the ones made here, have it)."""
    path = Path(record.storage_path)
    return path.exists() if path.is_absolute() else archive_storage().exists(str(path))


def state(record: BackupRecord) -> tuple:
    record.refresh_from_db()
    return record.status, record.deleted_at, record.deleted_reason, on_disk(record)


# -- a run -------------------------------------------------------------------------------------


def test_a_run_deletes_the_archives_no_rule_keeps_and_marks_their_records(
    archives, django_capture_on_commit_callbacks
):
    records = five_days(archives)
    sent = []

    def receive(sender, result, **kwargs):
        sent.append(result.as_dict())

    rotation_finished.connect(receive)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            outcome = cli("syncrotate", keep_last=2, no_input=True)
    finally:
        rotation_finished.disconnect(receive)
    assert outcome.status == 0
    assert "Deleted 3 archive(s), kept 2 (keep-last 2)." in outcome.out
    for kept in records[:2]:
        kept.refresh_from_db()
        assert on_disk(kept) and kept.deleted_at is None
    for gone in records[2:]:
        gone.refresh_from_db()
        assert not on_disk(gone)
        assert gone.deleted_at is not None
        assert gone.deleted_reason == "no rule keeps it"
        assert gone.status == Job.Status.SUCCEEDED  # the record stays, as it ended
    [summary] = sent
    assert [entry["id"] for entry in summary["deleted"]] == [r.pk for r in records[2:]]
    assert [entry["reason"] for entry in summary["kept"]] == ["last", "last"]
    assert summary["policy"] == "keep-last 2"


def test_a_second_run_finds_nothing_more_to_delete(archives):
    five_days(archives)
    rotate(Policy(keep_last=2))
    outcome = cli("syncrotate", keep_last=2, no_input=True)
    assert outcome.out.strip() == "Nothing to delete (keep-last 2)."


def test_the_dry_run_lists_each_backup_with_the_rule_and_deletes_nothing(archives):
    records = five_days(archives)
    outcome = cli("syncrotate", keep_last=1, max_age_days=2, dry_run=True)
    assert outcome.status == 0
    lines = outcome.out.splitlines()
    assert lines[0] == "Rotation of default (keep-last 1, max-age 2 days):"
    expected = [
        ("keep", records[0], "(last, within 2 days)"),
        ("keep", records[1], "(within 2 days)"),
        ("delete", records[2], "(older than 2 days, no rule keeps it)"),
        ("delete", records[3], "(older than 2 days, no rule keeps it)"),
        ("delete", records[4], "(older than 2 days, no rule keeps it)"),
    ]
    for line, (action, record, reason) in zip(lines[1:6], expected, strict=True):
        assert line.split()[:2] == [action, record.label]
        assert record.file_name in line and line.endswith(reason)
    assert lines[6] == "Dry run: 3 would be deleted, 2 kept."
    assert all(state(record)[1:] == (None, "", True) for record in records)


def test_the_run_asks_first_and_no_is_no(archives, monkeypatch):
    records = five_days(archives)
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    outcome = cli("syncrotate", keep_last=4)
    assert outcome.status == 1
    assert outcome.error == "Rotation cancelled; nothing was deleted."
    assert "delete" in outcome.out and records[4].label in outcome.out
    assert all(state(record)[1:] == (None, "", True) for record in records)
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert cli("syncrotate", keep_last=4).status == 0
    assert not on_disk(records[4])


def test_the_defaults_come_from_the_settings(archives, settings):
    records = five_days(archives)
    settings.BACKUP_KEEP_COUNT = 3
    rotate()
    assert [on_disk(record) for record in records] == [True, True, True, False, False]
    settings.BACKUP_KEEP_COUNT = None
    settings.BACKUP_MAX_AGE_DAYS = 2  # the backup of 2 days ago is older by now
    cli("syncrotate", no_input=True)
    assert [on_disk(record) for record in records] == [True, True, False, False, False]


def test_with_no_rule_nothing_is_deleted(archives):
    records = five_days(archives)
    outcome = cli("syncrotate", no_input=True)
    assert outcome.out.strip() == "Nothing to delete (no rule: everything is kept)."
    assert all(on_disk(record) for record in records)


def test_real_exports_are_rotated(archives):
    first = export(tables=["content.Tag"]).backup
    second = export(tables=["content.Tag"]).backup
    assert on_disk(first) and on_disk(second)
    result = rotate(Policy(keep_last=1))
    assert [entry.record.pk for entry in result.deleted] == [first.pk]
    assert not on_disk(first) and on_disk(second)


@pytest.mark.parametrize("option", [{"keep_last": -2}, {"max_age_days": 0}])
def test_a_bad_rule_is_refused_in_one_line(archives, option):
    records = five_days(archives)
    outcome = cli("syncrotate", no_input=True, **option)
    assert outcome.status == 1 and "must be a whole number" in outcome.error
    assert all(on_disk(record) for record in records)


# -- what is never deleted ---------------------------------------------------------------------


def test_a_running_jobs_archive_is_never_deleted(archives):
    older = five_days(archives)
    running = backup(archives, days_ago=10, status=Job.Status.RUNNING)
    running.started_at = timezone.now()  # it started just now: its heartbeat is fresh
    running.save()
    result = rotate(Policy(keep_last=1))
    assert running.pk not in [entry.record.pk for entry in result.deleted]
    assert state(running) == (Job.Status.RUNNING, None, "", True)
    assert len(result.deleted) == len(older) - 1


def test_the_newest_successful_backup_stays_when_every_rule_would_delete_it(archives):
    old = [backup(archives, days_ago) for days_ago in (40, 50)]
    failed = backup(archives, days_ago=1, status=Job.Status.FAILED)
    result = rotate(Policy(max_age_days=7))
    assert [entry.record.pk for entry in result.deleted] == [failed.pk, old[1].pk]
    assert state(old[0])[1:] == (None, "", True)
    assert [e.decision.reason for e in result.plan.kept] == ["newest successful"]


def test_a_backup_a_kept_one_depends_on_stays(archives):
    records = five_days(archives)
    oldest, newest = records[-1], records[0]

    def parents(record: BackupRecord) -> list[BackupRecord]:
        """A stand-in for incremental exports: the newest is an increment of the oldest."""
        return [oldest] if record.pk == newest.pk else []

    plan = plan_rotation(Policy(keep_last=1), dependencies=parents)
    decisions = {entry.record.pk: entry.decision for entry in plan.entries}
    assert decisions[oldest.pk].keep
    assert decisions[oldest.pk].reason == f"needed by #{newest.pk}"
    apply_rotation(plan)
    assert on_disk(oldest) and on_disk(newest)
    assert [on_disk(record) for record in records[1:4]] == [False, False, False]


def test_an_archive_written_outside_the_storage_is_left_alone(archives, tmp_path):
    records = five_days(archives)
    elsewhere_dir = tmp_path / "elsewhere"
    elsewhere_dir.mkdir()
    elsewhere = backup(elsewhere_dir, days_ago=30)
    rotate(Policy(keep_last=1))
    assert state(elsewhere)[1:] == (None, "", True)
    assert not any(on_disk(record) for record in records[1:])


# -- what is cleaned ---------------------------------------------------------------------------


def test_failed_and_stale_jobs_archives_and_killed_writers_leftovers_are_cleaned(archives):
    kept = backup(archives, days_ago=0)
    failed = backup(archives, days_ago=2, status=Job.Status.FAILED)
    failed_without_archive = backup(archives, days_ago=3, status=Job.Status.FAILED, write=False)
    stale = backup(archives, days_ago=1, status=Job.Status.RUNNING)  # no heartbeat for a day
    partial = archives / ".20261101T000000Z-full.backup.tar.gz.123-abcd1234.partial"
    partial.write_bytes(b"half an archive")
    an_hour_ago = time.time() - 3600
    os.utime(partial, (an_hour_ago, an_hour_ago))
    fresh_partial = archives / ".20261125T000000Z-full.backup.tar.gz.456-abcd1234.partial"
    fresh_partial.write_bytes(b"an export writing now")

    result = rotate(Policy(keep_last=5))

    assert state(kept)[1:] == (None, "", True)
    assert state(failed)[0] == Job.Status.FAILED
    assert state(failed)[2:] == ("failed: leftover archive", False)
    assert state(stale)[0] == Job.Status.FAILED  # marked failed, as a new job would
    assert state(stale)[2:] == ("stale: leftover archive", False)
    assert state(failed_without_archive)[1:3] == (None, "")  # nothing there: nothing to do
    assert result.leftovers == [partial.name]
    assert not partial.exists() and fresh_partial.exists()


def test_a_failed_jobs_record_naming_a_kept_backups_archive_leaves_the_archive(archives):
    kept = backup(archives, days_ago=0)
    # A failed export recorded its first-choice name; a later export took that name.
    failed = backup(archives, days_ago=0.5, status=Job.Status.FAILED, write=False)
    failed.file_name, failed.storage_path = kept.file_name, kept.storage_path
    failed.save()
    result = rotate(Policy(keep_last=1))
    assert [entry.record.pk for entry in result.deleted] == [failed.pk]
    assert state(failed)[2:] == ("failed: leftover archive, its archive is another's", True)
    assert state(kept)[1:] == (None, "", True)


# -- refusals: rotation does not delete what it cannot see -------------------------------------


def test_refused_when_the_storage_cannot_be_listed(archives, settings, tmp_path):
    records = five_days(archives)
    (archives / "not-a-folder").write_bytes(b"")
    settings.STORAGES = {
        **settings.STORAGES,
        "sync": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(archives / "not-a-folder")},
        },
    }
    # The records' archives are not inside the new location: point them there.
    for record in records:
        record.storage_path = str(archives / "not-a-folder" / record.file_name)
        record.save()
    outcome = cli("syncrotate", keep_last=1, no_input=True)
    assert outcome.status == 1
    assert outcome.error.startswith("Cannot list the archive storage: [Errno 20] Not a directory")
    assert outcome.error.endswith("nothing was deleted.")
    assert all(state(record)[1:3] == (None, "") for record in records)
    assert all((archives / record.file_name).exists() for record in records)


def test_refused_when_the_storage_lists_nothing_while_records_say_archives_are_there(archives):
    records = five_days(archives)
    moved = archives.parent / "moved"
    archives.rename(moved)  # say, a volume that was not mounted
    archives.mkdir()
    outcome = cli("syncrotate", keep_last=1, no_input=True)
    assert outcome.status == 1
    assert outcome.error == (
        "The archive storage lists no archives while 5 backup records say they are there; "
        "nothing was deleted. Check the storage settings (STORAGES['sync'], BACKUP_DIR)."
    )
    assert all(state(record)[1:3] == (None, "") for record in records)
    assert len(list(moved.iterdir())) == 5


def test_refused_when_the_newest_archive_is_not_listed(archives):
    records = five_days(archives)
    Path(records[0].storage_path).unlink()
    outcome = cli("syncrotate", keep_last=1, dry_run=True)
    assert outcome.status == 1
    assert "The newest backup's archive" in outcome.error
    assert "the listing looks incomplete; nothing was deleted." in outcome.error
    assert all(on_disk(record) for record in records[1:])


def test_a_new_site_without_archives_has_nothing_to_rotate(settings, tmp_path):
    settings.BACKUP_DIR = tmp_path / "not-yet"  # made by the first export
    settings.STORAGES = {k: v for k, v in settings.STORAGES.items() if k != "sync"}
    outcome = cli("syncrotate", keep_last=1, no_input=True)
    assert outcome.status == 0 and "Nothing to delete" in outcome.out


def test_times_are_shown_in_the_time_zone(archives, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    record = backup(archives, days_ago=0)
    outcome = cli("syncrotate", keep_last=1, dry_run=True)
    local = timezone.localtime(record.started_at)
    assert f"{local:%Y-%m-%d %H:%M} CE" in outcome.out
    assert isinstance(local, datetime)


def test_the_task_rotates_by_the_settings(archives, settings):
    from sync.tasks import rotate as rotate_task

    records = five_days(archives)
    settings.BACKUP_KEEP_COUNT = 2
    summary = rotate_task.apply().get()
    assert [entry["id"] for entry in summary["deleted"]] == [r.pk for r in records[2:]]
    assert summary["policy"] == "keep-last 2" and summary["dry_run"] is False
    assert [on_disk(record) for record in records] == [True, True, False, False, False]


def test_any_django_storage_is_rotated_by_name(settings):
    """Records that name their archive in the storage (not a local path), as archives
    written through the storage API do, in a storage that is no local folder."""
    from django.core.files.base import ContentFile

    from sync.storage import archive_storage

    settings.STORAGES = {
        **settings.STORAGES,
        "sync": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    storage = archive_storage()
    records = []
    for days_ago in range(3):
        when = timezone.now() - timedelta(days=days_ago)
        name = storage.save(f"{when:%Y%m%dT%H%M%SZ}-full.backup.tar.gz", ContentFile(b"x"))
        records.append(
            BackupRecord.objects.create(
                status=Job.Status.SUCCEEDED,
                created_at=when,
                started_at=when,
                file_name=name,
                storage_path=name,
            )
        )
    result = rotate(Policy(keep_last=1))
    assert [entry.name for entry in result.deleted] == [r.file_name for r in records[1:]]
    assert [storage.exists(r.file_name) for r in records] == [True, False, False]
    assert result.leftovers == []


def test_a_dry_run_of_the_engine_deletes_nothing_and_sends_nothing(
    archives, django_capture_on_commit_callbacks
):
    records = five_days(archives)
    sent = []

    def receive(sender, result, **kwargs):
        sent.append(result)

    rotation_finished.connect(receive)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = rotate(Policy(keep_last=1), dry_run=True)
            rotate(Policy(keep_last=5))  # a real run, to show the receiver hears
    finally:
        rotation_finished.disconnect(receive)
    assert result.as_dict()["dry_run"] is True and result.deleted == []
    assert len(result.plan.to_delete) == 4
    assert len(sent) == 1 and not sent[0].dry_run
    assert all(on_disk(record) for record in records)


@pytest.mark.parametrize("answer", [EOFError, KeyboardInterrupt], ids=["eof", "ctrl-c"])
def test_no_answer_at_the_prompt_deletes_nothing(archives, monkeypatch, answer):
    records = five_days(archives)

    def no_answer(prompt: str) -> str:
        raise answer

    monkeypatch.setattr("builtins.input", no_answer)
    outcome = cli("syncrotate", keep_last=4)

    assert (outcome.status, outcome.error) == (1, "Rotation cancelled; nothing was deleted.")
    assert all(state(record)[1:] == (None, "", True) for record in records)
