"""The write side on PostgreSQL: rows go in with psycopg's COPY, past Django's cursor, and its
errors must still come out as Django's database errors, in one line."""

from __future__ import annotations

import psycopg
import pytest
from django.db import DataError, IntegrityError, OperationalError, connections, transaction
from django.utils import timezone

from crearis.content.models import Tag
from sync.importer import ImportFailed
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from sync.models import ImportRun
from sync.writer import RowWriter
from tests.conftest import run_command
from tests.fingerprint import fingerprint
from tests.job_tools import reporter_calling

pytestmark = [
    pytest.mark.crossdb,
    pytest.mark.django_db(databases=["default", "pg"], transaction=True),
]

TAG_COLUMNS = ["name", "description", "name_i18n", "desc_i18n", "created_at", "updated_at"]


def copy_tag(name) -> None:
    """One tag row through RowWriter's COPY, in a transaction of its own."""
    now = timezone.now()
    with transaction.atomic(using="pg"):
        RowWriter(connections["pg"]).bulk_insert(
            "content_tag", TAG_COLUMNS, [[name, "", "{}", "{}", now, now]]
        )


def terminate(alias: str) -> None:
    """End ``alias``'s server process from another connection, as an administrator might."""
    connection = connections[alias]
    connection.ensure_connection()
    params = connection.get_connection_params()
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        (
            None,
            IntegrityError,
            'null value in column "name" of relation "content_tag" violates not-null constraint',
        ),
        ("a\x00b", DataError, "PostgreSQL text fields cannot contain NUL (0x00) bytes"),
    ],
    ids=["not-null", "nul-character"],
)
def test_values_copy_refuses_are_django_errors_of_one_line(name, error, message):
    with pytest.raises(error) as refused:
        copy_tag(name)

    assert str(refused.value) == f'{message} (copying rows into "content_tag")'
    assert not Tag.objects.using("pg").exists()


def test_a_terminated_connection_is_a_django_error_of_one_line():
    terminate("pg")

    with pytest.raises(OperationalError) as failed:
        copy_tag("lost")

    assert str(failed.value) == (
        'terminating connection due to administrator command (copying rows into "content_tag")'
    )
    assert not Tag.objects.using("pg").exists()  # a new connection, and the row is not there


def test_an_import_whose_connection_is_terminated_fails_in_one_line(tmp_path):
    run_command("syncseed", database="pg")
    archive = export(tables=["content.Tag"], using="pg", output_dir=tmp_path).path
    Tag.objects.using("pg").filter(name__startswith="t").delete()  # the import copies them back
    before = fingerprint("pg")
    terminated = []

    def terminate_once(count: int) -> None:
        if not terminated:
            terminate("pg")
            terminated.append(True)

    with pytest.raises(ImportFailed) as failed:
        run_import(archive, using="pg", reporter=reporter_calling(terminate_once))

    assert str(failed.value).startswith("Database error during import: ")
    assert "\n" not in str(failed.value)
    assert fingerprint("pg") == before
    run = ImportRun.objects.using("pg").get()
    assert (run.status, run.error) == (ImportRun.Status.FAILED, str(failed.value))
