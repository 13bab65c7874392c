"""The import's checks of an archive against the target's schema and of each value against its
field: what the engine cannot write is refused before any write, values the target would
change or lose are refused naming table, key, field and value, and secrets never show.

Runs on the default database (SQLite, and PostgreSQL in the suite's second pass); the
``crossdb`` tests repeat the vendor-dependent cases on PostgreSQL and MariaDB side by side.
"""

from __future__ import annotations

import decimal
from datetime import UTC, datetime, time, timedelta

import orjson
import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections, models
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from crearis.content.models import Event, EventInstructor, Participant, Tag, User
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from sync.models import ImportRun
from sync.records import field_decoder
from tests.archive_tools import read_records, rewrite_archive
from tests.awkward.models import Form, Seat, Specimen
from tests.cli import assert_refused, cli
from tests.conftest import run_command
from tests.fingerprint import fingerprint
from tests.plan_tools import changes

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


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_foreign_key_named_by_its_column_is_refused(demo, tmp_path, dry_run):
    """Django's get_field() finds a foreign key by its column's name too: an archive naming
    ``image_id`` where ``image`` belongs passed, and every event's image was cleared."""
    exported = export(tables=["content.Event"], output_dir=tmp_path).path
    archive = edited(
        exported,
        tmp_path,
        lambda r: dict(r, image_id=r.pop("image")),
        add_fields={"image_id": "ForeignKey"},
        drop_fields=["image"],
    )
    assert Event.objects.filter(image__isnull=False).exists()

    assert_refused(
        str(archive),
        expected="Unknown field content.Event.image_id in the archive: the model here has no "
        "such field ('image_id' is the column of its field 'image').",
        dry_run=dry_run,
        no_input=True,
    )


@pytest.mark.parametrize("value", [True, 1.0], ids=["true", "float"])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_reference_by_a_key_of_another_type_is_refused(db, tmp_path, value, dry_run):
    """Python takes true and 1.0 for 1: a periodic task whose interval (keyed by its id) an
    archive gave as true got the interval keyed 1, reported as a success."""
    one = IntervalSchedule.objects.create(id=1, every=1, period="days")
    two = IntervalSchedule.objects.create(id=2, every=2, period="days")
    PeriodicTask.objects.create(name="nightly", task="sync.nightly", interval=one)
    exported = export(tables=["django_celery_beat.PeriodicTask"], output_dir=tmp_path).path
    archive = edited(exported, tmp_path, lambda r: dict(r, interval=value))
    PeriodicTask.objects.update(interval=two)

    assert_refused(
        str(archive),
        expected=f"field 'interval' refers to django_celery_beat.IntervalSchedule by "
        f"{value!r}, but that model's key is (integer)",
        dry_run=dry_run,
        no_input=True,
    )
    assert PeriodicTask.objects.get().interval == two


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


# -- values the target would change or lose ----------------------------------------------------


@pytest.fixture
def events(demo, tmp_path):
    """An export of events and participants, and a participant and event to spoil."""
    archive = export(tables=["content.Event", "content.Participant"], output_dir=tmp_path).path
    participant = Participant.objects.order_by("xmlid").first()
    return archive, participant.xmlid, participant.event.xmlid


@pytest.mark.parametrize(
    ("label", "name", "value", "message"),
    [
        (
            "content.Participant",
            "age",
            70000,
            "field 'age': bad value 70000 (out of range for a PositiveSmallIntegerField "
            "(0 to 32767))",
        ),
        ("content.Participant", "age", -1, "field 'age': bad value -1 (out of range"),
        (
            "content.Event",
            "capacity",
            2**31,
            "field 'capacity': bad value 2147483648 (out of range for a PositiveIntegerField",
        ),
        (
            "content.Event",
            "price",
            "1.234",
            "field 'price': bad value '1.234' (more than 2 decimal places (a DecimalField(8, 2) "
            "would round it))",
        ),
        (
            "content.Event",
            "price",
            "1000000",
            "field 'price': bad value '1000000' (more than 6 digits before the decimal point",
        ),
        ("content.Event", "price", "NaN", "field 'price': bad value 'NaN'"),
        (
            "content.Event",
            "date_end",
            "9999-12-31T23:59:59-05:00",
            "field 'date_end': bad value '9999-12-31T23:59:59-05:00' (outside the years 1 to "
            "9999 once in UTC)",
        ),
    ],
    ids=[
        "small-int-over",
        "positive-negative",
        "int-over",
        "decimal-places",
        "decimal-digits",
        "decimal-nan",
        "datetime-beyond-9999-in-utc",
    ],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_value_the_field_cannot_hold_is_refused(
    events, tmp_path, label, name, value, message, dry_run
):
    archive, participant, event = events
    key = participant if label == "content.Participant" else event
    spoiled = with_value(archive, tmp_path, label, key, name, value)
    outcome = assert_refused(str(spoiled), expected=message, dry_run=dry_run, no_input=True)
    assert f"{label} {key!r}: " in outcome.error


def test_a_decimal_with_zeros_beyond_its_places_is_exact(events, tmp_path):
    archive, _, event = events
    run_import(with_value(archive, tmp_path, "content.Event", event, "price", "123456.780"))
    assert Event.objects.get(xmlid=event).price == decimal.Decimal("123456.78")


@pytest.mark.parametrize(
    ("f", "value", "message"),
    [
        (models.FloatField(), "nan", "not a finite number"),
        (models.FloatField(), "-inf", "not a finite number"),
        (models.FloatField(), 10**400, "not a number a float can hold"),
        (models.FloatField(), True, "expected a number"),
        (models.BigIntegerField(), 2**63, "out of range for a BigIntegerField"),
        (models.BigIntegerField(), -(2**63) - 1, "out of range for a BigIntegerField"),
        (models.PositiveBigIntegerField(), -1, "out of range for a PositiveBigIntegerField"),
        (models.IntegerField(), 1.5, "expected an integer, got float"),
        (models.IntegerField(), float("inf"), "expected an integer, got float"),
        (models.IntegerField(), True, "expected an integer, got bool"),
        (models.DecimalField(max_digits=5, decimal_places=2), 1.005, "more than 2 decimal"),
        (models.DecimalField(max_digits=5, decimal_places=2), "-0.001", "more than 2 decimal"),
        (models.DecimalField(max_digits=5, decimal_places=2), "1E+3", "more than 3 digits"),
        # Python's own limits: an OverflowError, not a traceback
        (models.DateTimeField(), "9999-12-31T23:59:59-05:00", "outside the years 1 to 9999"),
        (models.DateTimeField(), "0001-01-01T00:00:00+05:00", "outside the years 1 to 9999"),
        (models.DurationField(), "P1000000000D", "longer than a duration can be"),
        (models.DurationField(), "99999999999:00:00", "longer than a duration can be"),
        # Read without a complaint before, and stored as something else
        (models.TimeField(), "08:00:00+02:00", "a time with a UTC offset"),
        (models.BinaryField(), "QUJD!!", "not base64"),
        (models.BinaryField(), "!!!!", "not base64"),
        (models.BinaryField(), "QUJD\n", "not base64"),
        (models.BinaryField(), "é", "not base64"),
    ],
)
def test_decoders_refuse_values_no_database_holds_exactly(f, value, message):
    with pytest.raises(ValidationError, match=message):
        field_decoder(f)(value)


@pytest.mark.parametrize(
    ("f", "value", "expected"),
    [
        (models.FloatField(), 1e308, 1e308),
        (models.FloatField(), 2**63, float(2**63)),
        (models.BigIntegerField(), -(2**63), -(2**63)),
        (models.SmallIntegerField(), 3.0, 3),
        (models.SmallIntegerField(), "-32768", -32768),
        (models.DecimalField(max_digits=5, decimal_places=2), "999.99", decimal.Decimal("999.99")),
        (models.DecimalField(max_digits=5, decimal_places=2), 0.1, decimal.Decimal("0.1")),
        (models.DecimalField(max_digits=5, decimal_places=2), "0E+7", decimal.Decimal(0)),
        (
            models.DateTimeField(),
            "9999-12-31T23:59:59.999999+00:00",
            datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ),
        (models.DateTimeField(), "0001-01-01T05:00:00+05:00", datetime(1, 1, 1, tzinfo=UTC)),
        (models.DurationField(), "P999999999DT23H", timedelta(days=999999999, hours=23)),
        (models.TimeField(), "08:00:00.000001", time(8, 0, 0, 1)),
        (models.BinaryField(), "QUJD", b"ABC"),
        (models.BinaryField(), "", b""),
    ],
)
def test_decoders_keep_values_at_their_limits(f, value, expected):
    assert field_decoder(f)(value) == expected


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_changed_binary_value_is_planned_as_base64(db, tmp_path, dry_run):
    """A plan shows binary values as the archive holds them; a dry run that changed one
    crashed (a memoryview is not JSON)."""
    Specimen.objects.create(code="a", blob=b"new")
    archive = export(tables=["awkward.Specimen"], output_dir=tmp_path).path
    Specimen.objects.update(blob=b"old")

    _, run = run_import(archive, dry_run=dry_run, collect_changes=True)

    [entry] = changes(run)
    assert entry["fields"]["blob"] == {"old": "b2xk", "new": "bmV3"}
    assert bytes(Specimen.objects.get().blob) == (b"old" if dry_run else b"new")


def nul_archive(source, tmp_path, text_field=True):
    """``source`` (tags) with a NUL character in tag "a"'s description or in its JSON."""
    name, value = (
        ("description", "before\x00after")
        if text_field
        else ("name_i18n", {"de": ["ok", {"x\x00": "y"}]})
    )

    def edit(record):
        return dict(record, **{name: value}) if record["name"] == "a" else record

    return edited(source, tmp_path, edit), name, value


@pytest.mark.parametrize("text_field", [True, False], ids=["text", "json"])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_nul_character_is_refused_by_postgresql_only(db, tmp_path, text_field, dry_run):
    Tag.objects.create(name="a")
    exported = export(tables=["content.Tag"], output_dir=tmp_path).path
    archive, name, value = nul_archive(exported, tmp_path, text_field)
    if connection.vendor == "postgresql":
        assert_refused(
            str(archive),
            expected=f"content.Tag 'a': field {name!r}: bad value",
            dry_run=dry_run,
            no_input=True,
        )
        return
    run_import(archive, dry_run=dry_run)
    assert (getattr(Tag.objects.get(name="a"), name) == value) != dry_run


@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["key-map", "per-chunk"])
def test_a_nul_character_in_a_key_is_refused_by_postgresql_only(
    db, tmp_path, settings, lookup_limit
):
    """Looked up a chunk at a time, a key reaches the database before it is decoded."""
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    Tag.objects.create(name="a")
    exported = export(tables=["content.Tag"], output_dir=tmp_path).path
    archive = edited(exported, tmp_path, lambda r: dict(r, name="a\x00b"))
    if connection.vendor == "postgresql":
        outcome = assert_refused(str(archive), expected="content.Tag 'a\\x00b': ", dry_run=True)
        assert "NUL character" in outcome.error
        return
    run_import(archive)
    assert Tag.objects.filter(name="a\x00b").exists()


# -- secrets -----------------------------------------------------------------------------------

OLD_HASH = "pbkdf2_sha256$1$old-salt$OLDHASHOLDHASH"
NEW_HASH = "pbkdf2_sha256$1$new-salt$NEWHASHNEWHASH"


@pytest.fixture
def secret_archive(demo, tmp_path):
    """An archive with password hashes (NEW_HASH); the target has OLD_HASH for one user and
    lacks another."""
    gone = User.objects.create_user("gone@example.org").sysmail
    User.objects.update(password=NEW_HASH)
    archive = export(tables=["content.User"], output_dir=tmp_path, include_secrets=True).path
    changed = User.objects.exclude(sysmail=gone).order_by("sysmail").first().sysmail
    User.objects.filter(sysmail=changed).update(password=OLD_HASH)
    User.objects.filter(sysmail=gone).delete()
    return archive, changed, gone


def assert_no_secret(text: str) -> None:
    for secret in (OLD_HASH, NEW_HASH, "OLDHASH", "NEWHASH"):
        assert secret not in text


def test_show_changes_marks_a_changed_secret_without_its_value(secret_archive):
    archive, changed, gone = secret_archive
    out = cli("syncimport", str(archive), dry_run=True, show_changes=True).out
    assert_no_secret(out)
    assert f"    update {changed!r}\n      password: '(secret)' → '(changed)'\n" in out
    assert f"    insert {gone!r}\n" in out and "      password: '(secret)'\n" in out


def test_the_json_diff_marks_a_changed_secret_without_its_value(secret_archive):
    archive, changed, _ = secret_archive
    out = cli("syncimport", str(archive), json=True, no_input=True).out
    assert_no_secret(out)
    changes = {c["key"]: c for c in orjson.loads(out)["tables"][0]["changes"]}
    assert changes[changed]["fields"]["password"] == {"old": "(secret)", "new": "(changed)"}
    assert User.objects.get(sysmail=changed).password == NEW_HASH  # written all the same


def test_a_refused_secret_is_not_quoted(secret_archive, tmp_path):
    archive, changed, _ = secret_archive
    secret = "pbkdf2_sha256$1$salt$" + "SECRETHASH" * 20  # over max_length (128)

    def spoil(record):
        return dict(record, password=secret) if record["sysmail"] == changed else record

    spoiled = edited(archive, tmp_path, spoil)
    outcome = assert_refused(
        str(spoiled),
        expected=f"content.User {changed!r}: field 'password': bad value (a secret",
        no_input=True,
    )
    assert "SECRETHASH" not in outcome.error
    assert "SECRETHASH" not in ImportRun.objects.get().error


def test_a_secret_reference_changed_in_the_second_pass_is_not_shown(demo, tmp_path, settings):
    """References that close a cycle are compared after the rows (User.instructor)."""
    settings.SYNC_SENSITIVE_FIELDS = ["*.password", "content.User.instructor"]
    user = User.objects.filter(instructor__isnull=False).order_by("sysmail").first()
    archive = export(tables=["content.User"], output_dir=tmp_path, include_secrets=True).path
    User.objects.filter(pk=user.pk).update(instructor=None)

    run = run_import(archive, dry_run=True)[1]

    (change,) = [c for c in changes(run, "content.User") if c["key"] == user.sysmail]
    assert change["fields"] == {"instructor": {"old": None, "new": "(changed)"}}


# -- on every database -------------------------------------------------------------------------


@pytest.mark.crossdb
@pytest.mark.django_db(databases=["default", "pg", "maria"], transaction=True)
@pytest.mark.parametrize("alias", ["default", "pg", "maria"])
def test_checks_hold_on_every_database(tmp_path, alias):
    """Out-of-range integers are refused everywhere; a NUL character in a text or a JSON
    string only by PostgreSQL, and kept exactly by the others."""
    vendor = connections[alias].vendor
    Seat.objects.using(alias).create(code="s1", number=1)
    seats = export(tables=["awkward.Seat"], using=alias, output_dir=tmp_path / "seats").path
    spoiled = edited(seats, tmp_path, lambda r: dict(r, number=2**31))
    for dry_run in (True, False):
        assert_refused(
            str(spoiled),
            expected="awkward.Seat 's1': field 'number': bad value 2147483648",
            using=alias,
            database=alias,
            dry_run=dry_run,
            no_input=True,
        )

    Tag.objects.using(alias).create(name="a")
    tags = export(tables=["content.Tag"], using=alias, output_dir=tmp_path / "tags").path
    for text_field in (True, False):
        archive, name, value = nul_archive(tags, tmp_path, text_field)
        if vendor == "postgresql":
            assert_refused(
                str(archive),
                expected=f"content.Tag 'a': field {name!r}: bad value",
                using=alias,
                database=alias,
                dry_run=False,
                no_input=True,
            )
            continue
        run_import(archive, using=alias)
        assert getattr(Tag.objects.using(alias).get(name="a"), name) == value
        _, records = read_records(
            export(tables=["content.Tag"], using=alias, output_dir=tmp_path / f"again-{name}").path
        )
        assert next(r for r in records["content.Tag"] if r["name"] == "a")[name] == value


@pytest.mark.crossdb
@pytest.mark.django_db(databases=["default", "pg"], transaction=True)
def test_a_database_refusal_quoting_the_row_is_cut_to_its_first_line(tmp_path):
    """PostgreSQL's "DETAIL: Failing row contains (…)" quotes every column, secrets
    included: the message and the recorded error keep the first line only."""
    users = User.objects.using("pg")
    users.create(sysmail="a@example.org", password=OLD_HASH)
    archive = export(
        tables=["content.User"], using="pg", output_dir=tmp_path, include_secrets=True
    ).path
    users.update(password="short")
    with connections["pg"].cursor() as cursor:  # a rule only the database knows
        cursor.execute(
            "ALTER TABLE content_user ADD CONSTRAINT short_passwords CHECK (length(password) < 9)"
        )
    try:
        outcome = assert_refused(
            str(archive),
            expected='The database refused the data: new row for relation "content_user"',
            using="pg",
            database="pg",
            no_input=True,
        )
    finally:
        with connections["pg"].cursor() as cursor:
            cursor.execute("ALTER TABLE content_user DROP CONSTRAINT short_passwords")
    assert_no_secret(outcome.error)
    assert_no_secret(ImportRun.objects.using("pg").latest("started_at").error)


@pytest.mark.crossdb
@pytest.mark.django_db(databases=["default", "maria"], transaction=True)
def test_a_mariadb_refusal_quoting_a_unique_secret_does_not_show_it(tmp_path, settings):
    """MariaDB's own default collation (utf8mb4_general_ci; the tests' databases are
    utf8mb4_bin) takes "TOPSECRET" as "topsecret": the import's check, which compares as the
    column does (sync.collation), refuses the pair without quoting either; so would the
    database ("Duplicate entry '…'", which quotes the value) if the check let one through."""
    settings.SYNC_SENSITIVE_FIELDS = ["*.password", "awkward.Seat.nickname"]
    column = "nickname varchar(50) COLLATE {} NULL"
    with connections["maria"].cursor() as cursor:
        cursor.execute(f"ALTER TABLE awkward_seat MODIFY {column.format('utf8mb4_general_ci')}")
    try:
        seats = Seat.objects.using("maria")
        seats.create(code="a", number=1, nickname="topsecret")
        seats.create(code="b", number=2, nickname="other")
        archive = export(
            tables=["awkward.Seat"], using="maria", output_dir=tmp_path, include_secrets=True
        ).path
        spoiled = with_seat_value(archive, tmp_path, "b", "TOPSECRET")
        outcome = assert_refused(
            str(spoiled),
            expected="awkward.Seat 'b': field 'nickname' value (a secret: not shown) is held by "
            "awkward.Seat 'a' as (a secret: not shown): the collation of its field 'nickname' "
            "utf8mb4_general_ci takes them for one value",
            using="maria",
            database="maria",
            no_input=True,
        )
    finally:
        with connections["maria"].cursor() as cursor:
            cursor.execute(f"ALTER TABLE awkward_seat MODIFY {column.format('utf8mb4_bin')}")
    assert "TOPSECRET" not in outcome.error and "topsecret" not in outcome.error
    assert "TOPSECRET" not in ImportRun.objects.using("maria").latest("created_at").error


@pytest.mark.crossdb
@pytest.mark.django_db(databases=["default", "pg"], transaction=True)
def test_a_reference_with_a_nul_character_is_named_on_postgresql(tmp_path, settings):
    """A reference looked up a chunk at a time (a large table) whose key holds a NUL: no
    PostgreSQL row can hold it, so it is not found, and the record is named."""
    settings.SYNC_KEY_MAP_LIMIT = 1  # every table is looked up a chunk at a time
    run_command("syncseed", database="pg")
    run_command("syncdemo", events=2, seed=3, database="pg")
    archive = export(tables=["content"], using="pg", output_dir=tmp_path).path
    participant = Participant.objects.using("pg").order_by("xmlid").first().xmlid
    spoiled = with_value(
        archive, tmp_path, "content.Participant", participant, "event", "nowhere\x00event"
    )
    assert_refused(
        str(spoiled),
        expected=f"content.Participant {participant!r}: field 'event' refers to content.Event",
        using="pg",
        database="pg",
        no_input=True,
    )


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "import"])
@pytest.mark.parametrize("taken", ["from a kept row", "twice in the archive"])
def test_a_unique_secret_in_a_conflict_is_not_quoted(db, tmp_path, settings, taken, dry_run):
    """A unique field in SYNC_SENSITIVE_FIELDS (an API token): the conflict names the records
    and the field, never the value."""
    settings.SYNC_SENSITIVE_FIELDS = ["*.password", "awkward.Seat.nickname"]
    Seat.objects.create(code="a", number=1, nickname="TOPSECRET-A")
    Seat.objects.create(code="b", number=2, nickname="TOPSECRET-B")
    archive = export(tables=["awkward.Seat"], output_dir=tmp_path, include_secrets=True).path
    if taken == "from a kept row":  # b takes a's value; update mode keeps a (not newer)
        spoiled = with_seat_value(archive, tmp_path, "b", "TOPSECRET-A")
    else:
        spoiled = edited(archive, tmp_path, lambda r: dict(r, nickname="TOPSECRET-C"))

    outcome = assert_refused(
        str(spoiled),
        expected="field 'nickname' value (a secret: not shown)",
        mode="update" if taken == "from a kept row" else "replace",
        dry_run=dry_run,
        no_input=True,
    )

    assert "TOPSECRET" not in outcome.error
    assert "TOPSECRET" not in ImportRun.objects.latest("created_at").error


def with_seat_value(source, tmp_path, code, nickname):
    def edit(record):
        return dict(record, nickname=nickname) if record["code"] == code else record

    return edited(source, tmp_path, edit)


@pytest.mark.parametrize(
    "spoilt, reason",
    [
        (
            "TOPSECRET-KEY",
            "(a secret: not shown), which is neither in the archive nor in the target database",
        ),
        (987654321, "by (a secret: not shown), but that model's key is (text)"),
    ],
    ids=["no-record", "mistyped"],
)
def test_a_secret_reference_that_names_no_record_is_not_quoted(
    demo, tmp_path, settings, spoilt, reason
):
    """A reference in SYNC_SENSITIVE_FIELDS whose record is nowhere, or whose key has another
    type than the model's: the error names the record and the field, not the key it holds."""
    settings.SYNC_SENSITIVE_FIELDS = ["*.password", "content.User.instructor"]
    user = User.objects.filter(instructor__isnull=False).order_by("sysmail").first().sysmail
    archive = export(tables=["content.User"], output_dir=tmp_path, include_secrets=True).path

    def spoil(record):
        return dict(record, instructor=spoilt) if record["sysmail"] == user else record

    outcome = assert_refused(
        str(edited(archive, tmp_path, spoil)),
        expected=f"content.User {user!r}: field 'instructor' refers to content.Instructor {reason}",
        no_input=True,
    )
    assert str(spoilt) not in outcome.error
    assert str(spoilt) not in ImportRun.objects.latest("created_at").error
