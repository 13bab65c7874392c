"""Export: what lands in the archive, read back with the project's own reader and compared with
the database. The same tests run in the SQLite and in the PostgreSQL pass."""

import hashlib
import math
import os
import re
from datetime import time, timedelta
from pathlib import Path

import orjson
import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection

from crearis.content.models import (
    Event,
    EventInstructor,
    Project,
    Status,
    SystemConfig,
    Tag,
    User,
)
from sync.archive import ArchiveError, ArchiveReader
from sync.exporter import ExportError, select_models
from sync.jobs.exports import export
from sync.models import BackupRecord, SyncState
from sync.schema import syncable_models
from tests.awkward.models import Specimen
from tests.cli import cli
from tests.job_tools import reporter_calling

pytestmark = pytest.mark.django_db

# How the issue says each content model is identified in an archive (independent of schema.py).
KEY_FIELDS = {
    Status: ("name", "table"),
    Tag: ("name",),
    SystemConfig: ("key",),
    User: ("sysmail",),
    Project: ("domaincode",),
}
RFC3339_MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")


def read_archive(path) -> tuple[dict, dict[str, list[dict]]]:
    """The index and every table's records, read with sync.archive.ArchiveReader."""
    with ArchiveReader(path) as reader:
        tables = {
            entry.label: [orjson.loads(line) for line in lines] for entry, lines in reader.tables()
        }
        return reader.index.data, tables


def sync_key(obj):
    if isinstance(obj, EventInstructor):
        return [obj.event.xmlid, obj.instructor.xmlid]
    names = KEY_FIELDS.get(type(obj), ("xmlid",))
    values = [getattr(obj, name) for name in names]
    return values[0] if len(values) == 1 else values


def database_record(obj) -> dict:
    """A row as the archive should hold it: references by sync key, no ids, no secrets."""
    record = {}
    for f in type(obj)._meta.concrete_fields:
        if f.primary_key or f.generated or f.name == "password":
            continue
        value = getattr(obj, f.name)
        record[f.name] = sync_key(value) if f.is_relation and value is not None else value
    for f in type(obj)._meta.local_many_to_many:
        if f.remote_field.through._meta.auto_created:
            record[f.name] = sorted(sync_key(target) for target in getattr(obj, f.name).all())
    return record


def decoded(model, record: dict) -> dict:
    """An archive record with plain values turned back into Python by each field."""
    result = {}
    for name, value in record.items():
        f = model._meta.get_field(name)
        plain = not f.is_relation and value is not None and f.get_internal_type() != "JSONField"
        result[name] = f.to_python(value) if plain else value
    return result


def test_archive_holds_every_row_keyed_by_sync_keys(demo, tmp_path):
    result = export(output_dir=tmp_path)

    index, tables = read_archive(result.path)
    counts = {t["model"]: t["count"] for t in index["tables"]}
    content = [m for m in syncable_models() if m._meta.app_label == "content"]
    assert set(tables) == {m._meta.label for m in content}
    for model in content:
        in_archive = {
            orjson.dumps(sync_key_of(model, r)): decoded(model, r)
            for r in tables[model._meta.label]
        }
        in_database = {
            orjson.dumps(sync_key(obj)): database_record(obj) for obj in model.objects.all()
        }
        assert in_archive == in_database, model._meta.label
        assert len(tables[model._meta.label]) == counts[model._meta.label] == len(in_database)


def sync_key_of(model, record: dict):
    if model is EventInstructor:
        return [record["event"], record["instructor"]]
    names = KEY_FIELDS.get(model, ("xmlid",))
    return record[names[0]] if len(names) == 1 else [record[n] for n in names]


def test_references_are_written_as_sync_keys(demo, tmp_path):
    event = Event.objects.filter(tags__isnull=False, location__isnull=False).first()
    link = EventInstructor.objects.select_related("event", "instructor").first()

    _, tables = read_archive(export(output_dir=tmp_path).path)

    record = next(r for r in tables["content.Event"] if r["xmlid"] == event.xmlid)
    assert record["status"] == [event.status.name, "events"]
    assert record["project"] == event.project.domaincode
    assert record["location"] == event.location.xmlid
    assert record["tags"] == sorted(event.tags.values_list("name", flat=True))
    keys = [[r["event"], r["instructor"]] for r in tables["content.EventInstructor"]]
    assert [link.event.xmlid, link.instructor.xmlid] in keys
    project = next(r for r in tables["content.Project"] if r["regio"] is not None)
    assert Project.objects.filter(domaincode=project["regio"], type="regio").exists()


def test_many_to_many_keys_are_sorted_by_value(demo, tmp_path):
    event = Event.objects.first()
    event.tags.set([Tag.objects.create(name="teen group"), Tag.objects.get(name="teen")])

    _, tables = read_archive(export(tables=["content.Event"], output_dir=tmp_path).path)

    record = next(r for r in tables["content.Event"] if r["xmlid"] == event.xmlid)
    assert record["tags"] == ["teen", "teen group"]


def test_no_database_ids_leak(demo, tmp_path):
    index, tables = read_archive(export(output_dir=tmp_path).path)

    for entry in index["tables"]:
        assert "id" not in entry["fields"], entry["model"]
        assert "id" not in entry["key_fields"], entry["model"]
        for record in tables[entry["model"]]:
            assert "id" not in record
            for name in entry["references"]:
                values = record[name] if isinstance(record[name], list) else [record[name]]
                flat = [
                    v for value in values for v in (value if isinstance(value, list) else [value])
                ]
                assert not any(isinstance(v, int) for v in flat), (entry["model"], name)


def test_values_are_json_natives_with_exact_encodings(demo, tmp_path):
    index, tables = read_archive(export(output_dir=tmp_path).path)

    location = next(r for r in tables["content.Location"] if r["latitude"] is not None)
    assert isinstance(location["latitude"], str)  # decimals stay exact
    event = tables["content.Event"][0]
    assert RFC3339_MICRO.match(event["created_at"])
    assert any("." in r["created_at"] for r in tables["content.Event"])  # microseconds kept
    participant = tables["content.Participant"][0]
    assert isinstance(participant["meta"], dict)  # JSON columns stay JSON
    assert any(ord(c) > 127 for r in tables["content.Participant"] for c in r["name"])
    assert index["tables"][0]["fields"]["created_at"] == "DateTimeField"


def test_times_of_day_keep_every_microsecond_digit(db, tmp_path):
    # given: times whose microseconds orjson 3.13 writes with a digit short (10000 to 99999)
    clocks = {"a": time(0, 0, 0, 10000), "b": time(23, 59, 59, 99999), "c": time(8, 0, 0, 12)}
    for code, clock in clocks.items():
        Specimen.objects.create(code=code, clock=clock)
    Specimen.objects.create(code="d", clock=time(8, 0))
    Specimen.objects.create(code="e")

    # when
    _, tables = read_archive(export(tables=["awkward.Specimen"], output_dir=tmp_path).path)

    # then: six digits, or none when zero, as for datetimes
    written = {r["code"]: r["clock"] for r in tables["awkward.Specimen"]}
    assert written == {
        "a": "00:00:00.010000",
        "b": "23:59:59.099999",
        "c": "08:00:00.000012",
        "d": "08:00:00",
        "e": None,
    }


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_float_json_cannot_hold_is_refused_naming_it(db, tmp_path, value):
    # given: a NaN or an infinity, which JSON has no number for (orjson would write null)
    if math.isnan(value) and connection.vendor == "sqlite":
        pytest.skip("SQLite itself stores NaN as NULL")
    Specimen.objects.create(code="fine", ratio=1.5)
    Specimen.objects.create(code="odd", ratio=value)

    # when
    outcome = cli("syncexport", tables=["awkward.Specimen"], output=str(tmp_path))

    # then: refused in one line naming table, key, field and value; no archive
    assert outcome.status == 1
    assert outcome.error == (
        f"Export failed: awkward.Specimen 'odd': field 'ratio' holds {value}, which an archive "
        "cannot hold (JSON has no NaN or infinity)."
    )
    assert list(tmp_path.iterdir()) == []
    assert BackupRecord.objects.get().status == BackupRecord.Status.FAILED


@pytest.mark.parametrize(
    "value", ["0001-12-31 23:30:00+00 BC", "10000-01-01 00:30:00+00", "infinity"]
)
def test_a_datetime_beyond_the_year_9999_is_refused_naming_it(db, tmp_path, value):
    # given: a datetime PostgreSQL holds and Python does not (written by SQL, say)
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL holds such datetimes")
    Specimen.objects.create(code="fine")
    Specimen.objects.create(code="odd")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE awkward_specimen SET moment = %s::timestamptz WHERE code = 'odd'", [value]
        )

    # when
    outcome = cli("syncexport", tables=["awkward.Specimen"], output=str(tmp_path))

    # then: refused in one line naming table, key, field and value (was: a traceback, and no
    # export of the site at all)
    assert outcome.status == 1
    assert outcome.error == (
        f"Export failed: awkward.Specimen 'odd': field 'moment' holds {value!r}, outside the "
        "years 1 to 9999 that an archive's datetimes hold. Mend that row, or leave its table "
        "out (--exclude awkward.Specimen)."
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("day", "infinity", "outside the years 1 to 9999 that an archive's dates hold"),
        ("day", "-infinity", "outside the years 1 to 9999 that an archive's dates hold"),
        ("day", "0044-03-15 BC", "outside the years 1 to 9999 that an archive's dates hold"),
        ("clock", "24:00:00", "past the 23:59:59.999999 that an archive's times of day reach"),
        (
            "span",
            "-1000000000 days",
            "beyond the 999,999,999 days either way that an archive's durations hold",
        ),
    ],
)
def test_a_date_time_or_duration_python_cannot_hold_is_refused_naming_it(
    db, tmp_path, field, value, reason
):
    # given: a date, time of day or interval PostgreSQL holds and Python does not (by SQL)
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL holds such values")
    Specimen.objects.create(code="fine", day="2024-05-01", clock="08:00", span=timedelta(1))
    Specimen.objects.create(code="odd")
    column = {"day": "date", "clock": "time", "span": "interval"}[field]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE awkward_specimen SET {field} = %s::{column} WHERE code = 'odd'", [value]
        )

    # when
    outcome = cli("syncexport", tables=["awkward.Specimen"], output=str(tmp_path))

    # then: refused in one line naming table, key, field and value (was: "Export failed
    # reading the 'default' database: date too large (after year 10K): 'infinity'")
    assert outcome.status == 1
    assert outcome.error == (
        f"Export failed: awkward.Specimen 'odd': field {field!r} holds {value!r}, {reason}. "
        "Mend that row, or leave its table out (--exclude awkward.Specimen)."
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["NaN"])  # (a numeric with a precision holds no Infinity)
def test_a_decimal_no_import_can_write_is_refused_naming_it(db, tmp_path, value):
    # given: a decimal PostgreSQL's numeric holds and no DecimalField does
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL holds such decimals")
    Specimen.objects.create(code="odd")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE awkward_specimen SET wide = %s::numeric", [value])

    # when
    outcome = cli("syncexport", tables=["awkward.Specimen"], output=str(tmp_path))

    # then: refused naming it (was: an archive that no import, into any database, takes)
    assert outcome.status == 1
    assert outcome.error == (
        f"Export failed: awkward.Specimen 'odd': field 'wide' holds {value}, which no import "
        "can write back (a DecimalField holds finite numbers only)."
    )


def test_generated_column_is_not_written(demo, tmp_path):
    index, tables = read_archive(export(output_dir=tmp_path).path)

    entry = next(t for t in index["tables"] if t["model"] == "content.Project")
    assert "is_regio" not in entry["fields"]
    assert all("is_regio" not in r for r in tables["content.Project"])


def test_passwords_are_written_only_with_include_secrets(demo, tmp_path):
    User.objects.filter(sysmail=User.objects.first().sysmail).update(password="pbkdf2$hash")

    index, tables = read_archive(export(output_dir=tmp_path).path)
    assert index["include_secrets"] is False
    assert (
        "password" not in next(t for t in index["tables"] if t["model"] == "content.User")["fields"]
    )
    assert all("password" not in r for r in tables["content.User"])

    index, tables = read_archive(export(output_dir=tmp_path, include_secrets=True).path)
    assert index["include_secrets"] is True
    passwords = {r["sysmail"]: r["password"] for r in tables["content.User"]}
    assert passwords == dict(User.objects.values_list("sysmail", "password"))
    assert "pbkdf2$hash" in passwords.values()


def test_backup_record_and_sync_state(demo, tmp_path):
    result = export(output_dir=tmp_path)

    backup = BackupRecord.objects.get(pk=result.backup.pk)
    assert backup.status == BackupRecord.Status.SUCCEEDED
    assert backup.file_name == result.path.name
    assert backup.size == result.path.stat().st_size
    assert backup.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert backup.counts["content.Event"] == Event.objects.count() == 12
    assert backup.total_records == sum(backup.counts.values())
    assert backup.finished_at is not None and backup.error == ""
    index, _ = read_archive(result.path)
    assert index["backup_id"] == str(backup.backup_id)
    assert index["total_records"] == backup.total_records
    assert SyncState.objects.get(database="default").last_export_at == backup.finished_at


def test_archive_is_named_by_time_and_kind(demo, tmp_path):
    first = export(output_dir=tmp_path, compression="xz").path
    second = export(output_dir=tmp_path, compression="xz").path

    assert re.fullmatch(r"\d{8}T\d{6}Z-full(-\d+)?\.backup\.tar\.xz", first.name)
    assert first != second  # two exports in the same second never overwrite each other
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])


def test_a_failing_table_leaves_no_archive_and_a_failed_record(
    demo, participant_table_dropped, tmp_path
):
    with pytest.raises(Exception, match="content_participant"):
        export(output_dir=tmp_path)

    assert list(tmp_path.iterdir()) == []  # no archive, no partial file, no spool
    backup = BackupRecord.objects.get()
    assert backup.status == BackupRecord.Status.FAILED
    assert "content_participant" in backup.error
    assert backup.finished_at is not None


def test_an_interrupted_export_leaves_no_archive_and_a_cancelled_record(demo, tmp_path):
    def interrupt(written: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(output_dir=tmp_path, reporter=reporter_calling(interrupt))

    assert list(tmp_path.iterdir()) == []
    backup = BackupRecord.objects.get()
    assert backup.status == BackupRecord.Status.CANCELLED
    assert backup.error == (
        "Interrupted (Ctrl-C) before the export finished; no archive was written."
    )
    assert not SyncState.objects.filter(last_export_at__isnull=False).exists()


def test_bad_compression_level_is_refused_before_anything_starts(demo, tmp_path):
    with pytest.raises(ArchiveError, match="between 0 and 9"):
        export(output_dir=tmp_path, compression="gz", level=10)

    assert not BackupRecord.objects.exists()
    assert list(tmp_path.iterdir()) == []


# -- choosing tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["content.Event", "CONTENT.EVENT", "event", "events", "content_event", " Event "],
)
def test_a_table_is_found_by_any_of_its_names(name):
    assert select_models([name]) == [Event]


def test_plural_verbose_name_and_app_label_select_tables():
    assert select_models(["statuses"]) == [Status]
    assert set(select_models(["auth"])) == {Group, Permission}


def test_default_is_every_content_model():
    assert {m._meta.app_label for m in select_models()} == {"content"}
    assert len(select_models()) == 12


def test_with_dependencies_adds_every_referenced_table():
    chosen = {m._meta.label for m in select_models(["content.Event"], dependencies=True)}

    expected = {"Event", "Project", "Status", "User", "Location", "Instructor", "Image", "Tag"}
    assert {f"content.{name}" for name in expected} <= chosen
    assert "content.Participant" not in chosen  # it references Event, not the other way round


def test_exclude_leaves_tables_out():
    chosen = select_models(exclude=["participants", "content.Post"])

    assert Event in chosen
    assert not {m._meta.label for m in chosen} & {"content.Participant", "content.Post"}


@pytest.mark.parametrize("option", ["tables", "exclude"])
def test_an_unknown_table_is_named(option):
    with pytest.raises(ExportError, match=r"'content\.Evnt'"):
        select_models(**{option: ["content.Evnt"]})


def test_excluding_everything_is_refused():
    with pytest.raises(ExportError, match="No tables left"):
        select_models(["content.Tag"], exclude=["tags"])


def test_selected_tables_only(demo, tmp_path):
    index, tables = read_archive(
        export(tables=["content.Event"], with_dependencies=True, output_dir=tmp_path).path
    )

    labels = [t["model"] for t in index["tables"]]
    assert labels.index("content.Status") < labels.index("content.Project")
    assert labels.index("content.Project") < labels.index("content.Event")
    assert "content.Participant" not in tables
    assert len(tables["content.Event"]) == 12


def test_third_party_model_with_permissions(db, tmp_path):
    editors = Group.objects.create(name="editors")
    editors.permissions.set(
        Permission.objects.filter(content_type__app_label="content", codename__endswith="_event")
    )

    index, tables = read_archive(export(tables=["auth.Group"], output_dir=tmp_path).path)

    assert [t["model"] for t in index["tables"]] == ["auth.Group"]
    entry = index["tables"][0]
    assert entry["key_fields"] == ["name"]
    assert entry["references"] == {"permissions": "auth.Permission"}
    assert tables["auth.Group"] == [
        {
            "name": "editors",
            "permissions": [
                ["content", "event", f"{action}_event"]
                for action in ("add", "change", "delete", "view")
            ],
        }
    ]


# -- the documented format ---------------------------------------------------------------------


def test_index_has_what_docs_schemas_require(demo, tmp_path):
    """docs/schemas/*.json stay in step with the writer (full validation would need jsonschema,
    which the project does not depend on)."""
    schemas = Path(__file__).resolve().parent.parent / "docs" / "schemas"
    index_schema = orjson.loads((schemas / "index.schema.json").read_bytes())
    record_schema = orjson.loads((schemas / "record.schema.json").read_bytes())

    index, _ = read_archive(export(output_dir=tmp_path).path)

    assert set(index) == set(index_schema["required"])
    table_schema = index_schema["$defs"]["table"]
    for entry in index["tables"]:
        assert set(entry) == set(table_schema["required"])
        assert re.fullmatch(table_schema["properties"]["member"]["pattern"], entry["member"])
        assert set(entry["fields"].values()) <= set(record_schema["$defs"])


def test_export_clears_leftovers_by_age_never_by_pid(seeded, tmp_path, settings):
    """Spool folders and partial archives nothing touched for SYNC_JOB_STALE_AFTER are a
    killed writer's; fresh ones are a live writer's, whatever pid their name carries (it may
    be another container's, on a shared volume)."""
    settings.SYNC_JOB_STALE_AFTER = 60
    an_hour_ago = os.path.getmtime(tmp_path) - 3600  # the folder was made just now

    def aged(path: Path) -> Path:
        os.utime(path, (an_hour_ago, an_hour_ago))
        return path

    dead_spool = tmp_path / ".sync-spool-4242-abc"
    dead_spool.mkdir()
    (dead_spool / "001.jsonl").write_bytes(b"{}\n")
    aged(dead_spool / "001.jsonl")
    aged(dead_spool)
    dead_partial = tmp_path / ".20260101T000000Z-full.backup.tar.gz.4242.partial"
    dead_partial.write_bytes(b"half")
    aged(dead_partial)
    # another container's writer: a pid that is nobody here, files written a moment ago
    live_partial = tmp_path / ".20260101T000000Z-full.backup.tar.gz.999999.partial"
    live_partial.write_bytes(b"still writing")
    live_spool = tmp_path / ".sync-spool-999999-def"
    live_spool.mkdir()
    (live_spool / "001.jsonl").write_bytes(b"{}\n")
    aged(live_spool)  # the folder is old, the table being spooled into it is not

    export(tables=["content.Tag"], output_dir=tmp_path)

    assert not dead_spool.exists()
    assert not dead_partial.exists()
    assert live_partial.exists()
    assert live_spool.exists()
