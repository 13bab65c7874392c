"""Generic relations (``sync/generic.py``): a content type plus an id that names a row of any
model. Archives hold the referenced row's sync key, so references survive databases whose ids
differ; unresolvable ones are refused or, by option, dropped and reported.

The scenarios make ids differ on purpose: tag ids are swapped between export and import, so a
raw id copied from the archive would name the *other* tag.
"""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.contrib.admin.models import ADDITION, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.test import override_settings

from crearis.content.models import Tag, User
from sync.archive import ArchiveError
from sync.exporter import ExportError
from sync.importer import ImportFailed
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from sync.schema import key_paths, plan_models
from sync.verify import line_checker, verify_archive
from tests.archive_tools import read_records, rewrite_archive
from tests.awkward.models import Label, Note
from tests.cli import assert_refused, cli
from tests.fingerprint import fingerprint
from tests.plan_tools import plan_entries

pytestmark = pytest.mark.django_db

TABLES = ["content.Tag", "awkward.Note", "awkward.Label"]


# -- builders ----------------------------------------------------------------------------------


def note(xmlid: str, target, text: str = "", using: str = "default") -> Note:
    return Note.objects.using(using).create(xmlid=xmlid, target=target, text=text)


def label(name: str, target, using: str = "default") -> Label:
    return Label.objects.using(using).create(name=name, target=target)


def build_source(using: str = "default") -> None:
    """Tags alpha, beta, gamma; notes on a tag, on a note and on a label; labels of one name on
    two tags (their keys differ only by what they label) and a label on a note."""
    tags = {name: Tag.objects.using(using).create(name=name) for name in ("alpha", "beta", "gamma")}
    n1 = note("n1", tags["alpha"], "one", using)
    n2 = note("n2", tags["beta"], "two", using)
    red = label("red", tags["alpha"], using)
    label("red", tags["beta"], using)
    label("blue", n2, using)
    note("n3", n1, "on a note", using)
    note("n4", red, "on a label", using)


def swap_ids(model, a: int, b: int, using: str = "default") -> None:
    """Give two rows each other's id: a raw id copied from elsewhere now names the other."""
    rows = model._base_manager.using(using)
    spare = max(rows.values_list("id", flat=True)) + 1000
    rows.filter(id=a).update(id=spare)
    rows.filter(id=b).update(id=a)
    rows.filter(id=spare).update(id=b)


def swap_alpha_and_beta(using: str = "default") -> None:
    tags = Tag.objects.using(using)
    swap_ids(Tag, tags.get(name="alpha").id, tags.get(name="beta").id, using)


def describe(obj) -> Any:
    """What a generic reference names, by identity (never an id), through Django's own
    GenericForeignKey in the row's database."""
    target = obj.target
    if target is None:
        return None
    if isinstance(target, Tag):
        return ("tag", target.name)
    if isinstance(target, Note):
        return ("note", target.xmlid)
    if isinstance(target, Label):
        return ("label", describe(target), target.name)
    raise AssertionError(f"unexpected target {target!r}")


def state(using: str = "default") -> dict:
    return {
        "notes": {n.xmlid: (describe(n), n.text) for n in Note.objects.using(using)},
        "labels": sorted((describe(x), x.name) for x in Label.objects.using(using)),
    }


SOURCE_STATE = {
    "notes": {
        "n1": (("tag", "alpha"), "one"),
        "n2": (("tag", "beta"), "two"),
        "n3": (("note", "n1"), "on a note"),
        "n4": (("label", ("tag", "alpha"), "red"), "on a label"),
    },
    "labels": [
        (("note", "n2"), "blue"),
        (("tag", "alpha"), "red"),
        (("tag", "beta"), "red"),
    ],
}


def counts(result) -> dict:
    return {
        label: (t.new, t.updated, t.unchanged, t.skipped, t.deleted, t.dropped)
        for label, t in result.tables.items()
    }


@pytest.fixture
def archive(db, tmp_path):
    build_source()
    assert state() == SOURCE_STATE
    return export(tables=TABLES, output_dir=tmp_path).path


# -- export ------------------------------------------------------------------------------------


def test_export_writes_the_referenced_records_keys(archive):
    index, records = read_records(archive)
    entries = {t["model"]: t for t in index["tables"]}
    assert entries["awkward.Note"]["generic_references"] == {"object_id": "content_type"}
    assert entries["awkward.Label"]["generic_references"] == {"object_id": "content_type"}
    assert "generic_references" not in entries["content.Tag"]
    schema = orjson.loads(
        (Path(__file__).parent.parent / "docs/schemas/index.schema.json").read_bytes()
    )
    assert set(entries["awkward.Note"]) <= set(schema["$defs"]["table"]["properties"])
    # tables with generic relations load last, those that cannot wait after those that can
    assert [t["model"] for t in index["tables"]] == TABLES
    notes = {r["xmlid"]: (r["content_type"], r["object_id"]) for r in records["awkward.Note"]}
    assert notes == {
        "n1": (["content", "tag"], ["alpha"]),
        "n2": (["content", "tag"], ["beta"]),
        "n3": (["awkward", "note"], ["n1"]),
        "n4": (["awkward", "label"], ["content", "tag", ["alpha"], "red"]),
    }
    labels = sorted(
        (r["content_type"], r["object_id"], r["name"]) for r in records["awkward.Label"]
    )
    assert labels == [
        (["awkward", "note"], ["n2"], "blue"),
        (["content", "tag"], ["alpha"], "red"),
        (["content", "tag"], ["beta"], "red"),
    ]


def test_a_key_holding_a_generic_reference_reads_as_one_part():
    paths = key_paths(Label)
    assert paths[:2] == ["content_type__app_label", "content_type__model"]
    assert (paths[2].content_type, paths[2].object_id) == ("content_type", "object_id")
    assert paths[3] == "name"


def test_a_dangling_reference_that_cannot_be_null_refuses_the_export(db, tmp_path):
    tag = Tag.objects.create(name="gone")
    note("n1", tag)
    tag_id = tag.id
    tag.delete()  # legal in Django: nothing cascades to a generic reference
    outcome = assert_refused(
        command="syncexport",
        tables=TABLES,
        output=str(tmp_path),
        expected=f"awkward.Note 'n1': field 'object_id' refers to content.Tag id {tag_id}, "
        f"which does not exist",
    )
    assert "--exclude awkward.Note" in outcome.error
    assert not list(tmp_path.glob("*.backup.*"))


def test_a_label_on_a_missing_row_refuses_the_export(db, tmp_path):
    tag = Tag.objects.create(name="gone")
    label("red", tag)
    tag.delete()
    with pytest.raises(ExportError, match=r"awkward.Label .*field 'object_id' refers to content"):
        export(tables=["awkward.Label"], output_dir=tmp_path)


# -- import where ids differ -----------------------------------------------------------------


def prepare_target() -> None:
    """The target: alpha and beta have each other's ids; it holds the archive's red@alpha (its
    raw object_id is now the archive's red@beta's), a label the archive lacks, and n1 pointing
    elsewhere."""
    Note.objects.all().delete()
    Label.objects.all().delete()
    swap_alpha_and_beta()
    tags = {t.name: t for t in Tag.objects.all()}
    label("red", tags["alpha"])
    label("green", tags["gamma"])
    note("n1", tags["gamma"], "one")


EXPECTED = {
    "replace": (
        SOURCE_STATE,
        {
            "content.Tag": (0, 0, 3, 0, 0, 0),
            "awkward.Note": (3, 1, 0, 0, 0, 0),
            "awkward.Label": (2, 0, 1, 0, 1, 0),
        },
    ),
    "update": (
        SOURCE_STATE | {"labels": sorted([*SOURCE_STATE["labels"], (("tag", "gamma"), "green")])},
        {
            "content.Tag": (0, 0, 3, 0, 0, 0),
            "awkward.Note": (3, 1, 0, 0, 0, 0),
            "awkward.Label": (2, 0, 1, 0, 0, 0),
        },
    ),
    "append": (
        {
            "notes": SOURCE_STATE["notes"] | {"n1": (("tag", "gamma"), "one")},
            "labels": sorted([*SOURCE_STATE["labels"], (("tag", "gamma"), "green")]),
        },
        {
            "content.Tag": (0, 0, 0, 3, 0, 0),
            "awkward.Note": (3, 0, 0, 1, 0, 0),
            "awkward.Label": (2, 0, 0, 1, 0, 0),
        },
    ),
}


@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["key-map", "per-chunk"])
@pytest.mark.parametrize("mode", ["replace", "update", "append"])
def test_references_survive_ids_that_differ(archive, settings, mode, lookup_limit):
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    prepare_target()
    before = fingerprint()
    preview, _ = run_import(archive, mode=mode, dry_run=True)
    assert fingerprint() == before, "the dry run wrote"
    result, _ = run_import(archive, mode=mode)
    expected_state, expected_counts = EXPECTED[mode]
    assert state() == expected_state
    assert counts(result) == expected_counts
    assert counts(preview) == counts(result)
    assert preview.total_changes == result.total_changes


def test_a_second_import_changes_nothing(archive):
    prepare_target()
    run_import(archive)
    again, _ = run_import(archive)
    assert again.total_changes == 0
    assert state() == SOURCE_STATE


@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["key-map", "per-chunk"])
def test_a_target_row_whose_reference_names_no_row_matches_no_record(
    archive, settings, lookup_limit
):
    """Its key cannot be formed: replace mode deletes it as not in the archive, and says so."""
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    prepare_target()
    gone = Tag.objects.create(name="gone")
    label("red", gone)
    gone_id = gone.id
    gone.delete()
    outcome = cli("syncimport", str(archive), no_input=True, json=True)
    assert outcome.status == 0
    labels = next(t for t in orjson.loads(outcome.out)["tables"] if t["table"] == "awkward.Label")
    assert labels["deleted"] == 2  # green@gamma and red on the gone tag
    deleted = [c["key"] for c in labels["changes"] if c["action"] == "delete"]
    assert ["content", "tag", f"content.Tag id '{gone_id}', which does not exist", "red"] in deleted
    assert state() == SOURCE_STATE


def test_ids_are_stored_as_the_id_fields_type(archive):
    Note.objects.all().delete()
    Label.objects.all().delete()
    swap_alpha_and_beta()
    run_import(archive)
    alpha = Tag.objects.get(name="alpha")
    assert Note.objects.get(xmlid="n1").object_id == alpha.id  # an integer field
    assert Label.objects.get(name="red", object_id=str(alpha.id)).target == alpha  # a text one


def test_show_changes_names_references_by_key(archive, tmp_path):
    prepare_target()
    outcome = cli("syncimport", str(archive), dry_run=True, show_changes=True)
    assert outcome.status == 0
    assert "update 'n1'" in outcome.out
    assert "insert 'n2'" in outcome.out


def test_a_label_on_a_label_nests_keys(db, tmp_path):
    build_source()
    label("meta", Label.objects.get(name="red", object_id=Tag.objects.get(name="alpha").id))
    path = export(tables=TABLES, output_dir=tmp_path).path
    meta = next(r for r in read_records(path)[1]["awkward.Label"] if r["name"] == "meta")
    assert meta["object_id"] == ["content", "tag", ["alpha"], "red"]
    Label.objects.filter(name="meta").delete()
    swap_alpha_and_beta()
    result, _ = run_import(path)  # red@alpha is in the target: meta is written after it
    assert result.tables["awkward.Label"].new == 1
    assert (("label", ("tag", "alpha"), "red"), "meta") in state()["labels"]


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_label_on_a_label_written_with_it_is_refused_alike(db, tmp_path, dry_run):
    """Both are new: the label it names is written in the same statement, which a reference
    in a unique constraint cannot wait for. A dry run says so as the real run does."""
    build_source()
    label("meta", Label.objects.get(name="red", object_id=Tag.objects.get(name="alpha").id))
    path = export(tables=TABLES, output_dir=tmp_path).path
    Label.objects.all().delete()
    assert_refused(
        str(path),
        no_input=True,
        dry_run=dry_run,
        expected="awkward.Label ['awkward', 'label', ['content', 'tag', ['alpha'], 'red'], "
        "'meta']: field 'object_id' refers to awkward.Label ['content', 'tag', ['alpha'], "
        "'red'], which this import adds among the records written with it",
    )


# -- unresolvable references -------------------------------------------------------------------


def with_note_pointing_at(archive, tmp_path, content_type, object_id, xmlid="n2"):
    def edit(label, records):
        for record in records:
            if label == "awkward.Note" and record["xmlid"] == xmlid:
                record.update(content_type=content_type, object_id=object_id)
        return records

    return rewrite_archive(archive, tmp_path / "edited.backup.tar.gz", edit)


@pytest.mark.parametrize(
    ("content_type", "object_id", "expected"),
    [
        (
            ["content", "tag"],
            ["nowhere"],
            "refers to content.Tag ['nowhere'], which is neither in the archive nor in the "
            "target database",
        ),
        (["gone", "thing"], [1], "refers to a row of ['gone', 'thing'], a model not installed"),
    ],
    ids=["missing-row", "model-not-installed"],
)
def test_an_unresolvable_reference_is_refused(archive, tmp_path, content_type, object_id, expected):
    ContentType.objects.create(app_label="gone", model="thing")  # a stale content type
    edited = with_note_pointing_at(archive, tmp_path, content_type, object_id)
    prepare_target()
    assert_refused(
        str(edited), no_input=True, expected=f"awkward.Note 'n2': field 'object_id' {expected}"
    )


def test_an_unresolvable_secret_reference_is_not_quoted(archive, tmp_path, settings):
    settings.SYNC_SENSITIVE_FIELDS = ["*.password", "awkward.Note.object_id"]
    edited = with_note_pointing_at(archive, tmp_path, ["content", "tag"], ["TOPSECRET"])
    prepare_target()
    outcome = assert_refused(
        str(edited),
        no_input=True,
        expected="awkward.Note 'n2': field 'object_id' refers to content.Tag (a secret: not "
        "shown), which is neither in the archive nor in the target database",
    )
    assert "TOPSECRET" not in outcome.error


@pytest.mark.parametrize("table", ["awkward.Note", "awkward.Label"])
def test_replace_refuses_a_reference_to_a_row_it_deletes(archive, tmp_path, table):
    """A tag in the target but not in the archive: replace would delete it, and the reference
    would name no row (nothing cascades to a generic reference). Notes' references are checked
    in the second pass, labels' as they are read."""

    def on_delta(label, records):
        if label == table:
            records[-1].update(content_type=["content", "tag"], object_id=["delta"])
        return records

    edited = rewrite_archive(archive, tmp_path / "delta.backup.tar.gz", on_delta)
    prepare_target()
    Tag.objects.create(name="delta")
    for dry_run in (True, False):
        assert_refused(
            str(edited),
            no_input=True,
            dry_run=dry_run,
            expected="field 'object_id' refers to content.Tag 'delta', which is not in the "
            "archive: replace mode would delete it",
        )
    result, _ = run_import(edited, mode="update")  # deletes nothing: resolves against it
    assert result.tables[table].new >= 1


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_drop_unresolved_leaves_the_record_out_and_reports_it(archive, tmp_path, dry_run):
    edited = with_note_pointing_at(archive, tmp_path, ["content", "tag"], ["nowhere"])
    prepare_target()
    result, run = run_import(edited, drop_unresolved=True, dry_run=dry_run, collect_changes=True)
    notes = result.tables["awkward.Note"]
    assert (notes.new, notes.updated, notes.dropped) == (2, 1, 1)
    # the label on the dropped note has nothing to label: dropped too
    assert result.tables["awkward.Label"].dropped == 1
    dropped = [c for c in plan_entries(run, action="skip")]
    assert [(c["key"], c["reason"]) for c in dropped] == [
        (
            "n2",
            "field 'object_id' refers to content.Tag ['nowhere'], which is neither in the "
            "archive nor in the target database",
        ),
        (
            ["awkward", "note", ["n2"], "blue"],
            "field 'object_id' refers to awkward.Note ['n2'], which this import dropped",
        ),
    ]
    assert run.counts["awkward.Note"]["dropped"] == 1
    if not dry_run:
        assert "n2" not in state()["notes"]
        assert state()["notes"]["n1"] == (("tag", "alpha"), "one")


def test_drop_unresolved_is_shown_in_the_summary(archive, tmp_path):
    edited = with_note_pointing_at(archive, tmp_path, ["content", "tag"], ["nowhere"])
    prepare_target()
    outcome = cli("syncimport", str(edited), no_input=True, drop_unresolved=True)
    assert outcome.status == 0
    assert "1 dropped: unresolved generic references" in outcome.out


def test_a_reference_waiting_for_a_later_table_that_never_comes_is_refused(archive, tmp_path):
    """n4 names a label; labels load after notes, so n4 waits for the second pass."""
    missing = ["content", "tag", ["alpha"], "purple"]
    edited = with_note_pointing_at(archive, tmp_path, ["awkward", "label"], missing, "n4")
    prepare_target()
    assert_refused(
        str(edited),
        no_input=True,
        drop_unresolved=True,  # cannot be dropped any more: the note is written by then
        expected="awkward.Note 'n4': field 'object_id' refers to awkward.Label "
        "['content', 'tag', ['alpha'], 'purple'], which is neither",
    )


# -- the archive's description ----------------------------------------------------------------


def test_an_archive_with_raw_ids_is_refused(archive, tmp_path):
    """As written before generic references were keys: no generic_references, raw ids."""

    def raw_ids(label, records):
        for record in records:
            if label == "awkward.Note":
                record["object_id"] = 1
        return records

    def plain(index):
        for table in index["tables"]:
            table.pop("generic_references", None)

    edited = rewrite_archive(archive, tmp_path / "old.backup.tar.gz", raw_ids, plain)
    assert_refused(
        str(edited),
        no_input=True,
        expected="awkward.Note.object_id is a generic reference here, but the archive holds "
        "it as a plain value",
    )


def test_a_generic_reference_must_be_an_array(archive, tmp_path):
    edited = with_note_pointing_at(archive, tmp_path, ["content", "tag"], "alpha")
    with pytest.raises(ArchiveError, match="field 'object_id' holds str, expected a key"):
        verify_archive(edited)


def test_a_key_holding_an_object_is_refused(archive, tmp_path):
    edited = with_note_pointing_at(archive, tmp_path, ["content", "tag"], [{"name": "alpha"}])
    prepare_target()
    assert_refused(
        str(edited),
        no_input=True,
        drop_unresolved=True,  # not a reference that names no row: a broken archive
        expected="line 2: field 'object_id' holds a list with an object in it, expected a key",
    )


@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["key-map", "per-chunk"])
def test_a_key_with_a_nul_character_is_refused_naming_it(archive, tmp_path, settings, lookup_limit):
    """PostgreSQL cannot hold one: it is refused before it is looked up (elsewhere it is a key
    that no row has)."""
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    edited = with_note_pointing_at(archive, tmp_path, ["content", "tag"], ["al\x00pha"])
    prepare_target()
    assert_refused(
        str(edited),
        no_input=True,
        expected="awkward.Note 'n2': field 'object_id' refers to content.Tag ['al\\x00pha']",
    )


def test_a_reader_that_does_not_know_generic_references_refuses_them(archive):
    """Why the format stays version 1: a reader from before checks the field's own type."""
    index, records = read_records(archive)
    fields = next(t["fields"] for t in index["tables"] if t["model"] == "awkward.Note")
    note = records["awkward.Note"][0]
    line = orjson.dumps(note) + b"\n"
    assert "holds list" in line_checker(fields)(line, note)
    assert line_checker(fields, ["object_id"])(line, note) is None


def test_a_malformed_generic_references_entry_is_refused(archive, tmp_path):
    def bad(index):
        index["tables"][1]["generic_references"] = {"object_id": ["content_type"]}

    edited = rewrite_archive(archive, tmp_path / "bad.backup.tar.gz", edit_index=bad)
    assert_refused(
        str(edited), no_input=True, expected="generic reference 'object_id' → ['content_type']"
    )


# -- load order ---------------------------------------------------------------------------------


def test_tables_with_generic_relations_load_after_the_others():
    order = [p.label for p in plan_models([Label, Note, Tag, User])]
    assert order.index("awkward.Note") > max(
        order.index("content.Tag"), order.index("content.User")
    )
    assert order.index("awkward.Label") > order.index("awkward.Note")
    plans = {p.label: p for p in plan_models([Label, Note, Tag])}
    assert plans["awkward.Note"].deferred == {"object_id"}  # waits for the second pass
    assert plans["awkward.Label"].deferred == set()  # in the sync key: cannot wait


# -- admin log entries (no GenericForeignKey: named in SYNC_GENERIC_RELATIONS) -----------------


def log_entries() -> dict[str, Any]:
    return {
        e.object_repr: (e.content_type and e.content_type.model, e.object_id)
        for e in LogEntry.objects.all()
    }


def test_admin_log_entries_follow_the_records_they_name(db, tmp_path):
    admin = User.objects.create_user("admin@example.org", is_staff=True)
    alpha, beta = Tag.objects.create(name="alpha"), Tag.objects.create(name="beta")
    for tag in (alpha, beta):
        LogEntry.objects.log_actions(admin.pk, [tag], ADDITION, single_object=True)
    gone = Tag.objects.create(name="gone")
    LogEntry.objects.log_actions(admin.pk, [gone], DELETION, single_object=True)
    gone.delete()
    tables = ["content.User", "content.Tag", "admin.LogEntry"]
    result = export(tables=tables, output_dir=tmp_path)
    # the entry of a deleted tag names no row: written as null (Django reads both as None)
    assert result.nulled["admin.LogEntry"].count == 1
    assert "content.Tag id" in str(result.nulled["admin.LogEntry"].examples[0])
    LogEntry.objects.all().delete()
    swap_alpha_and_beta()
    run_import(result.path, tables=tables)
    alpha, beta = Tag.objects.get(name="alpha"), Tag.objects.get(name="beta")
    assert log_entries() == {
        "alpha": ("tag", str(alpha.id)),
        "beta": ("tag", str(beta.id)),
        "gone": ("tag", None),
    }


def test_export_reports_nulled_references_even_when_quiet(db, tmp_path):
    admin = User.objects.create_user("admin@example.org", is_staff=True)
    gone = Tag.objects.create(name="gone")
    LogEntry.objects.log_actions(admin.pk, [gone], DELETION, single_object=True)
    gone.delete()
    out, err = StringIO(), StringIO()
    tables = ["admin.LogEntry"]
    call_command(
        "syncexport", tables=tables, output=str(tmp_path), quiet=True, stdout=out, stderr=err
    )
    assert out.getvalue().strip().endswith(".backup.tar.gz")
    assert err.getvalue().startswith(
        "admin.LogEntry: 1 generic reference(s) named no row and were written as null, e.g. "
        "admin.LogEntry "
    )


def test_an_archive_with_generic_references_this_database_does_not_know_is_refused(db, tmp_path):
    admin = User.objects.create_user("admin@example.org", is_staff=True)
    LogEntry.objects.log_actions(admin.pk, [admin], ADDITION, single_object=True)
    path = export(tables=["admin.LogEntry"], output_dir=tmp_path).path
    refused = pytest.raises(ImportFailed, match=r"admin\.LogEntry\.object_id: the archive holds")
    with override_settings(SYNC_GENERIC_RELATIONS=[]), refused:
        run_import(path)


def test_the_setting_is_checked(settings):
    settings.SYNC_GENERIC_RELATIONS = [("admin.LogEntry", "user", "object_id")]
    with pytest.raises(Exception, match=r"sync\.E001"):
        call_command("check")


# -- across databases ---------------------------------------------------------------------------


@pytest.mark.crossdb
@pytest.mark.parametrize(
    ("source", "targets"), [("pg", ["default", "maria"]), ("maria", ["pg"])], ids=["pg", "maria"]
)
@pytest.mark.django_db(databases=["default", "pg", "maria"], transaction=True)
def test_references_move_between_databases(tmp_path, source, targets):
    """The source's ids start high; the targets give theirs from 1, in another order."""
    for n in range(50):
        Tag.objects.using(source).create(name=f"filler {n}")
    Tag.objects.using(source).all().delete()
    build_source(source)
    path = export(tables=TABLES, output_dir=tmp_path, using=source).path
    source_ids = dict(Tag.objects.using(source).values_list("name", "id"))
    for using in targets:
        Tag.objects.using(using).create(name="gamma")  # first here: ids differ from the source
        label("red", Tag.objects.using(using).create(name="alpha"), using)
        result, _ = run_import(path, using=using, mode="update")
        assert state(using) == SOURCE_STATE, using
        assert result.tables["awkward.Label"].unchanged == 1  # red@alpha, matched by key
        assert dict(Tag.objects.using(using).values_list("name", "id")) != source_ids


def test_a_plan_shows_generic_references_to_existing_rows_by_key(archive):
    """Not the stored id: the sync key of the row named (n1 names alpha in the archive)."""
    n1 = Note.objects.get(xmlid="n1")
    n1.target = Tag.objects.get(name="beta")
    n1.save()

    _, run = run_import(archive, mode="replace", dry_run=True)

    [entry] = [e for e in plan_entries(run, "awkward.Note", "update") if e["key"] == "n1"]
    assert entry["fields"] == {"object_id": {"old": "beta", "new": "alpha"}}
    [label_entry] = [
        e for e in plan_entries(run, "awkward.Label") if e["key"][-1] == "blue"
    ]  # a label on a note: unchanged, and its key names the note by key
    assert label_entry["action"] == "unchanged"


def test_replace_notes_generic_references_it_leaves_naming_rows_it_deletes(db, tmp_path):
    """A tag the archive lacks is deleted; the note and the label on it are in tables the
    import does not load: they stay, and both runs say so on the tag table, alike."""
    build_source()
    tags_only = export(tables=["content.Tag"], output_dir=tmp_path).path
    delta = Tag.objects.create(name="delta")
    note("n9", delta, "on a tag that goes")
    label("green", delta)

    preview, _ = run_import(tags_only, dry_run=True)
    result, _ = run_import(tags_only)

    expected = [
        f"1 {holder} row(s) keep generic references to content.Tag rows this import deletes: "
        f"{holder} is not imported, and a generic relation has no on_delete"
        for holder in ("awkward.Label", "awkward.Note")
    ]
    assert preview.tables["content.Tag"].notes == result.tables["content.Tag"].notes == expected
    assert result.tables["content.Tag"].deleted == 1
    assert Note.objects.get(xmlid="n9").target is None  # left as it was, naming no row
