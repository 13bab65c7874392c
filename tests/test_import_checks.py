"""The import's checks of an archive against the target's schema and of each value against its
field: what the engine cannot write is refused before any write, values the target would
change or lose are refused naming table, key, field and value, and secrets never show.

Runs on the default database (SQLite, and PostgreSQL in the suite's second pass); the
``crossdb`` tests repeat the vendor-dependent cases on PostgreSQL and MariaDB side by side.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from crearis.content.models import EventInstructor, Tag, User
from sync.exporter import export
from sync.models import ImportRun
from sync.runs import run_import
from tests.archive_tools import rewrite_archive
from tests.awkward.models import Form
from tests.cli import assert_refused, cli
from tests.fingerprint import fingerprint

pytestmark = pytest.mark.django_db

MODES = ["replace", "update", "append"]
RUNS = [(mode, dry_run) for mode in MODES for dry_run in (True, False)]
RUN_IDS = [f"{mode}{'-dry-run' if dry_run else ''}" for mode, dry_run in RUNS]


def edited(source, tmp_path, edit_record, label=None, add_fields=None, drop_fields=()):
    """``source`` with ``edit_record`` applied to each record (of table ``label``, if given),
    the index's field lists changed to match."""

    def edit_records(table, records):
        if label not in (None, table):
            return records
        return [edit_record(dict(r)) for r in records]

    def edit_index(index):
        for table in index["tables"]:
            if label in (None, table["model"]):
                table["fields"].update(add_fields or {})
                for name in drop_fields:
                    del table["fields"][name]

    return rewrite_archive(source, tmp_path / "edited.tar.gz", edit_records, edit_index)


def with_value(source, tmp_path, label, xmlid, name, value):
    """``source`` with field ``name`` of the record keyed ``xmlid`` set to ``value``."""

    def edit(record):
        if record["xmlid"] == xmlid:
            record[name] = value
        return record

    return edited(source, tmp_path, edit, label)


# -- fields the engine does not write ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "instructors",
            "it is a many-to-many relation through content.EventInstructor, a table of its own",
        ),
        ("participants", "it is a reverse relation"),
    ],
    ids=["m2m-through-a-model", "reverse-relation"],
)
@pytest.mark.parametrize(("mode", "dry_run"), RUNS, ids=RUN_IDS)
def test_a_field_the_import_does_not_write_is_refused(demo, tmp_path, name, reason, mode, dry_run):
    """An event's list of instructors (links the engine writes as EventInstructor records)
    was once compared and acted on: every event-instructor row deleted, the events reported
    "unchanged"."""
    assert EventInstructor.objects.exists()
    exported = export(tables=["content.Event"], output_dir=tmp_path).path
    archive = edited(
        exported, tmp_path, lambda r: dict(r, **{name: []}), add_fields={name: "ManyToManyField"}
    )
    assert_refused(
        str(archive),
        expected=f"Field content.Event.{name} cannot be imported: {reason}",
        mode=mode,
        dry_run=dry_run,
        no_input=True,
    )


@pytest.mark.parametrize("mode", MODES)
def test_an_import_that_reports_no_change_changes_no_row(demo, tmp_path, mode):
    """Every table of the site, link tables included, row for row: a report of "unchanged"
    must mean it."""
    archive = export(output_dir=tmp_path).path
    before = fingerprint()
    result, _ = run_import(archive, mode=mode)
    assert result.total_changes == 0
    assert all(t.new == t.updated == t.deleted == 0 for t in result.tables.values())
    assert fingerprint() == before


# -- fields the archive lacks ------------------------------------------------------------------


@pytest.fixture
def forms(db, tmp_path):
    """The target holds form "a"; the archive holds "a" and a new "b", both made with every
    field of Form (each test takes out the fields it wants absent)."""
    Form.objects.create(name="b", required_text="archive", with_default=1, optional="archive")
    Form.objects.create(name="a", required_text="archive", with_default=2, optional="archive")
    archive = export(tables=["awkward.Form"], output_dir=tmp_path).path
    Form.objects.filter(name="b").delete()
    Form.objects.filter(name="a").update(required_text="here", with_default=3, optional="here")
    return archive


def without(archive, tmp_path, *names):
    def drop(record):
        for name in names:
            del record[name]
        return record

    return edited(archive, tmp_path, drop, drop_fields=names)


def form_rows() -> dict:
    return {
        row[0]: row[1:]
        for row in Form.objects.values_list("name", "required_text", "with_default", "optional")
    }


ABSENT_NOTES = [
    "field 'with_default' not in archive, default used",
    "field 'optional' not in archive, default used (NULL)",
]
# New rows get the default (7) and NULL; rows the import overwrites keep theirs.
ABSENT_RESULT = {
    "replace": {"a": ("archive", 3, "here"), "b": ("archive", 7, None)},
    "update": {"a": ("archive", 3, "here"), "b": ("archive", 7, None)},
    "append": {"a": ("here", 3, "here"), "b": ("archive", 7, None)},
}


@pytest.mark.parametrize(("mode", "dry_run"), RUNS, ids=RUN_IDS)
def test_fields_the_archive_lacks_get_their_default_and_are_noted(forms, tmp_path, mode, dry_run):
    archive = without(forms, tmp_path, "with_default", "optional")
    before = form_rows()

    result, run = run_import(archive, mode=mode, dry_run=dry_run)

    assert result.tables["awkward.Form"].notes == ABSENT_NOTES
    assert run.counts["awkward.Form"]["notes"] == ABSENT_NOTES
    assert result.tables["awkward.Form"].new == 1
    assert form_rows() == (before if dry_run else ABSENT_RESULT[mode])


def test_the_command_shows_fields_the_archive_lacks(forms, tmp_path):
    archive = str(without(forms, tmp_path, "with_default", "optional"))
    preview = cli("syncimport", archive, dry_run=True)
    as_json = orjson.loads(cli("syncimport", archive, json=True, dry_run=True).out)
    applied = cli("syncimport", archive, no_input=True)
    for out in (preview.out, applied.out):
        assert "    note: field 'with_default' not in archive, default used\n" in out
        assert "    note: field 'optional' not in archive, default used (NULL)\n" in out
    assert as_json["tables"][0]["notes"] == ABSENT_NOTES


@pytest.mark.parametrize(("mode", "dry_run"), RUNS, ids=RUN_IDS)
def test_a_required_field_the_archive_lacks_is_refused(forms, tmp_path, mode, dry_run):
    """Once filled with "" in every row."""
    archive = without(forms, tmp_path, "required_text")
    assert_refused(
        str(archive),
        expected=(
            "awkward.Form: field 'required_text' is not in the archive, and the model here has "
            "no default for it and does not allow NULL"
        ),
        mode=mode,
        dry_run=dry_run,
        no_input=True,
    )
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


def test_timestamps_the_archive_lacks_are_the_time_of_the_import(seeded, tmp_path):
    exported = export(tables=["content.Tag"], output_dir=tmp_path).path
    archive = edited(
        exported,
        tmp_path,
        lambda r: {k: v for k, v in r.items() if k not in ("created_at", "updated_at")},
        drop_fields=("created_at", "updated_at"),
    )
    Tag.objects.all().delete()
    start = datetime.now(UTC)

    result, _ = run_import(archive)

    assert result.tables["content.Tag"].notes == [
        "field 'created_at' not in archive, the time of the import used",
        "field 'updated_at' not in archive, the time of the import used",
    ]
    assert Tag.objects.filter(created_at__gte=start, updated_at__gte=start).count() == (
        result.tables["content.Tag"].new
    )


def test_users_of_an_archive_without_secrets_are_added_without_a_password(demo, tmp_path):
    sysmail = User.objects.create_user("added@example.org", "a password").sysmail
    archive = export(tables=["content.User"], output_dir=tmp_path).path
    User.objects.filter(sysmail=sysmail).delete()

    result, _ = run_import(archive, mode="append")

    assert result.tables["content.User"].notes == [
        "field 'password' not in archive, a secret the export left out: new rows get an empty value"
    ]
    user = User.objects.get(sysmail=sysmail)
    assert user.password == "" and not user.check_password("")
