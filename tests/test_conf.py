"""sync.conf: the app's settings have defaults, so a project may set none of them."""

from __future__ import annotations

from pathlib import Path

from crearis.content.models import Tag
from sync.conf import DEFAULTS, sync_settings
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from tests.cli import cli


def without_sync_settings(settings) -> None:
    for name in DEFAULTS:
        if hasattr(settings, name):
            delattr(settings, name)


def test_a_setting_the_project_leaves_out_has_its_default(settings):
    without_sync_settings(settings)
    assert sync_settings.SYNC_KEY_MAP_LIMIT == 100_000
    assert sync_settings.SYNC_SENSITIVE_FIELDS == ["*.password"]
    backup_dir = sync_settings.BACKUP_DIR
    assert backup_dir == Path(settings.BASE_DIR) / "backups"


def test_a_setting_the_project_gives_wins(settings, tmp_path):
    settings.SYNC_KEY_MAP_LIMIT = 7
    settings.BACKUP_DIR = str(tmp_path)
    assert sync_settings.SYNC_KEY_MAP_LIMIT == 7
    backup_dir = sync_settings.BACKUP_DIR
    assert backup_dir == tmp_path


def test_an_export_and_import_work_without_any_sync_setting(settings, demo, tmp_path):
    without_sync_settings(settings)
    archive = export(tables=["content.Tag"], output_dir=tmp_path).path
    changed = Tag.objects.first()
    Tag.objects.filter(pk=changed.pk).update(description="changed")

    result, _ = run_import(archive, mode="replace")

    assert result.counts()["content.Tag"]["updated"] == 1
    assert Tag.objects.get(pk=changed.pk).description == changed.description


def test_an_export_of_no_named_tables_without_default_apps_says_what_to_set(settings, db, tmp_path):
    without_sync_settings(settings)
    outcome = cli("syncexport", output=str(tmp_path))
    assert outcome.status == 1
    assert "No tables to export: name them (--tables) or set SYNC_DEFAULT_APPS." in outcome.error
    assert list(tmp_path.iterdir()) == []


def test_archives_live_in_backup_dir_unless_a_sync_storage_is_named(settings, tmp_path):
    from django.core.files.base import ContentFile

    from sync.storage import archive_storage

    settings.BACKUP_DIR = tmp_path / "here"
    settings.STORAGES = {k: v for k, v in settings.STORAGES.items() if k != "sync"}
    archive_storage().save("a.txt", ContentFile(b"x"))
    assert (tmp_path / "here" / "a.txt").read_bytes() == b"x"

    settings.STORAGES = {
        **settings.STORAGES,
        "sync": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "there")},
        },
    }
    archive_storage().save("b.txt", ContentFile(b"y"))
    assert (tmp_path / "there" / "b.txt").read_bytes() == b"y"
