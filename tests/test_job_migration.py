"""sync/migrations/0002_jobs.py on a database holding exports and imports recorded before
jobs existed: every row keeps its data and becomes a job."""

import uuid

import pytest
from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("sync", "0001_initial")]
AFTER = [("sync", "0002_jobs")]


@pytest.mark.parametrize(
    "alias",
    [
        pytest.param("default", marks=pytest.mark.django_db(transaction=True)),
        pytest.param(
            "maria",
            marks=[
                pytest.mark.crossdb,
                pytest.mark.django_db(transaction=True, databases=["default", "maria"]),
            ],
        ),
    ],
)
def test_existing_exports_and_imports_become_jobs(alias):
    executor = MigrationExecutor(connections[alias])
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    then = timezone.now().replace(microsecond=0)
    backup = (
        old.get_model("sync", "BackupRecord")
        .objects.using(alias)
        .create(file_name="a.backup.tar.gz", backup_id=uuid.uuid4(), status="succeeded", pid=7)
    )
    refused = (
        old.get_model("sync", "ImportRun")
        .objects.using(alias)
        .create(archive="b.backup.tar.gz", mode="replace", status="refused", error="Refused: busy")
    )
    running = (
        old.get_model("sync", "ImportRun")
        .objects.using(alias)
        .create(archive="c.backup.tar.gz", mode="update", status="running", started_by="syncimport")
    )

    executor = MigrationExecutor(connections[alias])
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    backups = new.get_model("sync", "BackupRecord").objects.using(alias)
    imports = new.get_model("sync", "ImportRun").objects.using(alias)

    export_job = backups.get(pk=backup.pk)
    assert (export_job.status, export_job.file_name, export_job.pid) == (
        "succeeded",
        "a.backup.tar.gz",
        7,
    )
    assert export_job.started_at == export_job.created_at >= then
    refused_job, running_job = imports.get(pk=refused.pk), imports.get(pk=running.pk)
    assert (refused_job.status, refused_job.error) == ("failed", "Refused: busy")
    assert refused_job.error_detail == {"reason": "refused"}
    assert refused_job.created_at == refused.started_at == refused_job.started_at
    assert (running_job.status, running_job.started_by) == ("running", "syncimport")
    tokens = [export_job.token, refused_job.token, running_job.token]
    assert None not in tokens and len(set(tokens)) == 3
