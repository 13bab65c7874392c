"""Archives in the archive storage (``STORAGES["sync"]``), against a real S3-compatible server on
127.0.0.1 (moto's standalone server, tests/s3.py): exports land there complete and under a name
that records keep; verify, inspect and import read from it; reconcile compares it with the
records."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

import pytest
from django.urls import reverse

from crearis.content.models import Event, Tag
from sync.jobs.exports import export
from sync.jobs.imports import apply_plan, run_import
from sync.models import BackupRecord, ImportRun, Job
from sync.storage import archive_storage, locate_archive
from tests.cli import assert_refused, cli
from tests.fingerprint import fingerprint
from tests.job_tools import reporter_calling
from tests.s3 import S3Server

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server.start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server, settings, tmp_path) -> str:
    """A new, empty bucket that the archive storage points at (BACKUP_DIR: an empty folder
    that must stay empty)."""
    name = s3_server.new_bucket()
    settings.STORAGES = {**settings.STORAGES, "sync": s3_server.storage_config(name)}
    settings.BACKUP_DIR = tmp_path / "local-backups"
    return name


def object_sha256(s3_server: S3Server, bucket: str, key: str) -> str:
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    for chunk in body.iter_chunks(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


# -- exporting into the bucket -----------------------------------------------------------------


def test_an_export_lands_in_the_bucket_whole_and_its_record_keeps_the_name(
    demo, bucket, s3_server, settings
):
    result = export()

    backup = BackupRecord.objects.get()
    assert result.path is None and result.location == result.name
    assert s3_server.keys(bucket) == [result.name]
    assert backup.storage_path == backup.file_name == result.name  # a name, no local path
    assert not Path(backup.storage_path).is_absolute()
    assert object_sha256(s3_server, bucket, result.name) == backup.sha256
    head = s3_server.client().head_object(Bucket=bucket, Key=result.name)
    assert head["ContentLength"] == backup.size
    assert not Path(settings.BACKUP_DIR).exists()


def test_two_exports_in_one_second_keep_both_archives(demo, bucket, s3_server):
    first = export(tables=["content.Tag"], compression="none")
    second = export(tables=["content.Tag"], compression="none")

    assert first.name != second.name
    assert s3_server.keys(bucket) == sorted([first.name, second.name])


def test_an_interrupted_export_leaves_nothing_in_the_bucket(demo, bucket, s3_server):
    def interrupt(written: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(reporter=reporter_calling(interrupt))

    assert s3_server.keys(bucket) == []
    assert BackupRecord.objects.get().status == Job.Status.CANCELLED


def test_an_upload_that_fails_is_a_failed_export_with_nothing_left(demo, s3_server, settings):
    settings.STORAGES = {**settings.STORAGES, "sync": s3_server.storage_config("no-such-bucket")}

    refused = cli("syncexport", "--tables", "content.Tag")

    assert refused.status == 1
    assert refused.error.startswith("Export failed: Cannot upload ")
    assert "NoSuchBucket" in refused.error
    backup = BackupRecord.objects.get()
    assert backup.status == Job.Status.FAILED and "NoSuchBucket" in backup.error


# -- reading from the bucket -------------------------------------------------------------------


def test_verify_inspect_and_import_take_a_name_in_the_bucket(demo, bucket):
    name = export().name
    original = fingerprint()

    verified = cli("syncverify", name)
    inspected = cli("syncinspect", name)
    Tag.objects.update(description="edited here")
    Event.objects.update(teaser="edited here")
    imported = cli("syncimport", name, "--no-input", "--quiet")

    assert verified.status == 0 and "all checksums match" in verified.out
    assert inspected.status == 0 and "content.Event" in inspected.out
    assert imported.status == 0, imported.error
    assert fingerprint() == original
    assert ImportRun.objects.get().archive == name


def test_a_round_trip_through_the_bucket_gives_back_the_same_records(demo, bucket):
    original = fingerprint()
    name = export(compression="zst").name
    Tag.objects.update(description="edited here")

    result, run = run_import(name, mode="replace")

    assert run.status == Job.Status.SUCCEEDED
    assert result.total_changes == Tag.objects.count()
    assert fingerprint() == original


def test_a_preview_of_an_archive_in_the_bucket_is_applied_as_previewed(demo, bucket):
    name = export(tables=["content.Tag"]).name
    Tag.objects.update(description="edited here")

    _, preview = run_import(name, mode="replace", dry_run=True, collect_changes=True)
    result, applied = apply_plan(preview.label)

    assert applied.status == Job.Status.SUCCEEDED and applied.applies_id == preview.pk
    assert result.total_changes == Tag.objects.count()
    assert not Tag.objects.filter(description="edited here").exists()


def test_an_existing_local_path_wins_over_a_name_in_the_bucket(demo, bucket, tmp_path):
    local = export(tables=["content.Tag"], output_dir=tmp_path / "here").path
    with open(local, "rb") as data:
        archive_storage().save(local.name, data)  # the same name in the bucket too

    assert locate_archive(local).path == local
    assert locate_archive(local.name).in_storage  # the current folder has no such file
    assert locate_archive(local.name).name == local.name


def test_a_name_neither_here_nor_in_the_bucket_is_refused(demo, bucket):
    export(tables=["content.Tag"])

    for command in ("syncverify", "syncinspect"):
        refused = cli(command, "20200101T000000Z-full.backup.tar.gz")
        assert refused.status == 1 and "Cannot open" in refused.error
    assert_refused("20200101T000000Z-full.backup.tar.gz", "--no-input", expected="Cannot open")


# -- reconcile ---------------------------------------------------------------------------------


def test_reconcile_lists_unrecorded_archives_and_records_whose_archive_is_gone(
    demo, bucket, s3_server
):
    kept = export(tables=["content.Tag"])
    gone = export(tables=["content.Event"], with_dependencies=True)
    client = s3_server.client()
    stray = "20200101T000000Z-full.backup.tar.gz"
    client.copy_object(Bucket=bucket, Key=stray, CopySource={"Bucket": bucket, "Key": kept.name})
    client.put_object(Bucket=bucket, Key="notes.txt", Body=b"not an archive")
    client.put_object(Bucket=bucket, Key="plans/import-1.sqlite3", Body=b"not an archive")
    client.put_object(Bucket=bucket, Key="20200102T000000Z-full.backup.tar.gz", Body=b"junk")
    client.delete_object(Bucket=bucket, Key=gone.name)
    keys = s3_server.keys(bucket)

    listed = cli("syncinspect", "--reconcile")

    assert listed.status == 0
    assert f"unrecorded  {stray}" in listed.out
    assert "unrecorded  20200102T000000Z-full.backup.tar.gz" in listed.out
    assert f"missing     {gone.name}  ({gone.backup.label}: gone)" in listed.out
    assert "notes.txt" not in listed.out and "plans" not in listed.out
    assert BackupRecord.objects.count() == 2
    assert s3_server.keys(bucket) == keys

    fixed = cli("syncinspect", "--reconcile", "--fix")

    assert fixed.status == 0
    assert s3_server.keys(bucket) == keys  # nothing deleted
    recorded = BackupRecord.objects.get(storage_path=stray)
    assert recorded.status == Job.Status.SUCCEEDED
    assert recorded.counts == kept.backup.counts and recorded.tables == ["content.Tag"]
    assert recorded.backup_id is None  # the copy's id is the recorded archive's
    assert recorded.size == kept.backup.size
    assert "Not recorded: 20200102T000000Z-full.backup.tar.gz" in fixed.out
    gone.backup.refresh_from_db()
    assert gone.backup.missing_since is not None and gone.backup.status == Job.Status.SUCCEEDED
    listing = cli("syncinspect", "--json").out
    assert '"missing"' in listing

    again = cli("syncinspect", "--reconcile")
    assert stray not in again.out
    assert f"missing     {gone.name}" in again.out  # still gone, already marked


def test_reconcile_fails_when_the_storage_cannot_be_listed(demo, s3_server, settings):
    settings.STORAGES = {**settings.STORAGES, "sync": s3_server.storage_config("no-such-bucket")}

    refused = cli("syncinspect", "--reconcile", "--fix")

    assert refused.status == 1 and refused.error.startswith("Cannot list the archive storage")


def test_reconcile_works_on_the_local_backup_folder_too(demo, settings, tmp_path):
    settings.BACKUP_DIR = tmp_path
    kept = export(tables=["content.Tag"])
    old_style = export(tables=["content.Project"])
    gone = export(tables=["content.Status"])
    (tmp_path / gone.name).unlink()
    assert kept.backup.storage_path == kept.name  # relative to BACKUP_DIR
    # as records kept it before archives lived in the storage: still that archive's record
    BackupRecord.objects.filter(pk=old_style.backup.pk).update(
        storage_path=str(tmp_path / old_style.name)
    )

    fixed = cli("syncinspect", "--reconcile", "--fix")

    assert f"missing     {gone.name}" in fixed.out
    assert "unrecorded" not in fixed.out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kept.name, old_style.name])
    assert cli("syncverify", str(tmp_path / old_style.name)).status == 0


def test_reconcile_does_not_call_an_archive_that_rotation_deleted_missing(demo, settings, tmp_path):
    settings.BACKUP_DIR = tmp_path
    rotated = export(tables=["content.Status"])
    export(tables=["content.Tag"])
    assert cli("syncrotate", keep_last=1, no_input=True).status == 0
    assert not (tmp_path / rotated.name).exists()

    listed = cli("syncinspect", "--reconcile")

    assert "missing" not in listed.out and "unrecorded" not in listed.out


# -- the admin's download ----------------------------------------------------------------------


def test_the_admin_streams_an_archive_from_the_bucket(admin_client, demo, bucket, s3_server):
    backup = export().backup
    url = reverse("admin:sync_backuprecord_download", args=[backup.pk])

    listing = admin_client.get(reverse("admin:sync_backuprecord_changelist"))
    response = admin_client.get(url)

    assert url in listing.content.decode()
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="{backup.file_name}"'
    assert int(response["Content-Length"]) == backup.size
    data = b"".join(response.streaming_content)
    assert hashlib.sha256(data).hexdigest() == backup.sha256


def test_the_download_needs_the_view_permission_and_an_archive(
    client, admin_client, demo, bucket, s3_server, django_user_model
):
    backup = export(tables=["content.Tag"]).backup
    url = reverse("admin:sync_backuprecord_download", args=[backup.pk])
    staff = django_user_model.objects.create_user("staff@example.com", "x", is_staff=True)
    client.force_login(staff)

    assert client.get(url).status_code == 403
    s3_server.client().delete_object(Bucket=bucket, Key=backup.storage_path)
    assert admin_client.get(url).status_code == 404


def test_an_export_to_the_bucket_removes_what_dead_uploaders_left_in_tmpdir(
    demo, bucket, s3_server, tmp_path, monkeypatch, settings
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    dead = tmp_path / "tmp" / ".sync-spool-upload-4242-abcd"
    alive = tmp_path / "tmp" / ".sync-spool-upload-4343-efgh"
    for folder in (dead, alive):
        folder.mkdir()
        (folder / "20200101T000000Z-full.backup.tar.gz").write_bytes(b"half an archive")
    old = time.time() - settings.SYNC_JOB_STALE_AFTER - 60
    for path in (dead, dead / "20200101T000000Z-full.backup.tar.gz"):
        os.utime(path, (old, old))

    name = export(tables=["content.Tag"]).name

    assert s3_server.keys(bucket) == [name]
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == [alive.name]
