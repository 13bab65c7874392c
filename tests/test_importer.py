import gc
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.core.management import CommandError
from django.db import connection

from crearis.content.demo import delete_content
from crearis.content.models import Event, Participant, Project, Status, Tag, User
from sync.importer import ImportFailed, stamp_peek
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from sync.models import ImportRun, SyncState
from tests.archive_tools import read_records, rewrite_archive
from tests.conftest import run_command
from tests.locks import lock_held_elsewhere

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def canonical(path_dir, tables=None) -> dict:
    """Every record of the chosen tables, read back from a fresh export: a database-neutral
    dump to compare states with."""
    _, records = read_records(export(tables=tables, output_dir=path_dir, compression="none").path)
    return {label: sorted(rows, key=repr) for label, rows in records.items()}


def make_tag(name: str, description: str, updated_at: datetime) -> None:
    Tag.objects.create(name=name, description=description)
    Tag.objects.filter(name=name).update(created_at=T0, updated_at=updated_at)


@pytest.fixture
def tag_scenario(db, tmp_path):
    """Target holds a (equal), b (newer than archive), c (older), d (not in archive).
    The archive holds a, b (older, other text), c (newer, other text), e (new)."""
    make_tag("a", "same", T0)
    make_tag("b", "target text", T0 + timedelta(days=2))
    make_tag("c", "target text", T0)
    make_tag("d", "only in target", T0)
    exported = export(tables=["content.Tag"], output_dir=tmp_path).path

    def edit(label, records):
        by_name = {r["name"]: r for r in records}
        by_name["b"].update(
            description="archive text", updated_at=(T0 + timedelta(days=1)).isoformat()
        )
        by_name["c"].update(
            description="archive text", updated_at=(T0 + timedelta(days=1)).isoformat()
        )
        new = dict(by_name["a"], name="e", description="new")
        return [by_name["a"], by_name["b"], by_name["c"], new]

    return rewrite_archive(exported, tmp_path / "edited.backup.tar.gz", edit)


UPDATE_RESULT = {
    "a": "same",
    "b": "target text",
    "c": "archive text",
    "d": "only in target",
    "e": "new",
}


def tags() -> dict[str, str]:
    return dict(Tag.objects.values_list("name", "description"))


@pytest.mark.parametrize(
    ("mode", "expected", "counts"),
    [
        (
            "replace",
            {"a": "same", "b": "archive text", "c": "archive text", "e": "new"},
            {"new": 1, "updated": 2, "unchanged": 1, "skipped": 0, "deleted": 1},
        ),
        (
            "update",
            UPDATE_RESULT,
            {"new": 1, "updated": 1, "unchanged": 1, "skipped": 1, "deleted": 0},
        ),
        (
            "append",
            {
                "a": "same",
                "b": "target text",
                "c": "target text",
                "d": "only in target",
                "e": "new",
            },
            {"new": 1, "updated": 0, "unchanged": 0, "skipped": 3, "deleted": 0},
        ),
    ],
)
@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["key-map", "per-chunk"])
def test_mode_semantics(tag_scenario, settings, lookup_limit, mode, expected, counts):
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    result, run = run_import(tag_scenario, mode=mode)
    assert tags() == expected
    diff = result.tables["content.Tag"]
    assert {k: getattr(diff, k) for k in counts} == counts
    assert run.status == ImportRun.Status.SUCCEEDED


def z_times(label, records):
    return [dict(r, updated_at=r["updated_at"].replace("+00:00", "Z")) for r in records]


@pytest.mark.parametrize(
    ("edit_records", "edit_bytes"),
    [
        (z_times, lambda label, data: data),
        (lambda label, records: records, lambda label, data: data.replace(b'":', b'": ')),
    ],
    ids=["z-timestamps", "spaced-json"],
)
def test_update_mode_reads_lines_in_any_json_shape(
    tag_scenario, tmp_path, edit_records, edit_bytes
):
    """The fast path (key and updated_at read from the line unparsed, compared as text) must
    give what parsing gives, and lines it does not know are parsed."""
    shaped = rewrite_archive(
        tag_scenario, tmp_path / "shaped.tar.gz", edit_records, edit_bytes=edit_bytes
    )
    result, _ = run_import(shaped, mode="update")
    assert tags() == UPDATE_RESULT
    diff = result.tables["content.Tag"]
    assert (diff.new, diff.updated, diff.unchanged, diff.skipped) == (1, 1, 1, 1)


def test_update_mode_matches_keys_with_escapes(db, tmp_path):
    make_tag('say "hi"', "target", T0)
    make_tag("back\\slash", "target", T0)
    exported = export(tables=["content.Tag"], output_dir=tmp_path).path
    newer = (T0 + timedelta(seconds=1)).isoformat()
    edited = rewrite_archive(
        exported,
        tmp_path / "edited.tar.gz",
        lambda label, records: [dict(r, description="archive", updated_at=newer) for r in records],
    )
    result, _ = run_import(edited, mode="update")
    assert tags() == {'say "hi"': "archive", "back\\slash": "archive"}
    assert result.tables["content.Tag"].updated == 2


def test_update_mode_takes_timestamps_from_the_archive(tag_scenario):
    run_import(tag_scenario, mode="update")
    assert Tag.objects.get(name="c").updated_at == T0 + timedelta(days=1)
    assert Tag.objects.get(name="e").created_at == T0


@pytest.mark.parametrize("mode", ["replace", "update", "append"])
@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["key-map", "per-chunk"])
def test_dry_run_writes_nothing_and_predicts_the_real_import(
    tag_scenario, tmp_path, settings, lookup_limit, mode
):
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    before = canonical(tmp_path / "before", ["content.Tag"])
    preview, _ = run_import(tag_scenario, mode=mode, dry_run=True)
    assert canonical(tmp_path / "after", ["content.Tag"]) == before
    applied, _ = run_import(tag_scenario, mode=mode)
    assert preview.counts() == applied.counts()
    assert preview.total_changes == applied.total_changes > 0


def test_dry_run_changes_no_sequence(demo, tmp_path):
    archive = export(output_dir=tmp_path).path
    run_command("syncdemo", events=14, seed=8, force=True)
    next_before = Tag.objects.create(name="probe-1").pk
    run_import(archive, dry_run=True)
    assert Tag.objects.create(name="probe-2").pk == next_before + 1


def test_show_changes_names_fields_with_old_and_new_values(tag_scenario):
    out = run_command("syncimport", str(tag_scenario), dry_run=True, show_changes=True)
    assert "tags: 1 new, 2 updated, 1 deleted" in out
    assert "description: 'target text' → 'archive text'" in out
    assert "    delete 'd'\n" in out and "      description: 'only in target'\n" in out
    assert "pk:" not in out  # never an id
    assert "Total changes: 4 records" in out


def test_json_output_is_the_engine_diff(tag_scenario):
    data = orjson.loads(run_command("syncimport", str(tag_scenario), dry_run=True, json=True))
    (table,) = data["tables"]
    assert table["table"] == "content.Tag"
    actions = {c["key"]: c["action"] for c in table["changes"]}
    assert actions == {"b": "update", "c": "update", "d": "delete", "e": "insert"}
    assert data["dry_run"] is True


@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["key-map", "per-chunk"])
def test_replace_round_trip_restores_a_changed_database(demo, tmp_path, settings, lookup_limit):
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    archive = export(output_dir=tmp_path / "a").path
    before = canonical(tmp_path / "before")
    Event.objects.filter(pk__in=Event.objects.values("pk")[:3]).delete()
    Participant.objects.update(city="Elsewhere")
    Project.objects.filter(regio__isnull=False).update(regio=None)
    User.objects.update(instructor=None)
    Event.objects.first().tags.clear()
    Tag.objects.create(name="extra")
    extra = Participant.objects.first()
    extra.pk, extra.xmlid = None, "extra.participant__x"
    extra.save()
    result, _ = run_import(archive, mode="replace")
    assert canonical(tmp_path / "after") == before
    assert result.tables["content.Tag"].deleted == 1
    assert result.tables["content.Participant"].deleted == 1
    assert result.tables["content.Event"].new == 3


@pytest.mark.parametrize("write_buffer", [20_000, 5], ids=["writes-at-end", "writes-early"])
@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["key-map", "per-chunk"])
def test_import_into_an_empty_database_resolves_cycles_and_self_references(
    demo, tmp_path, settings, monkeypatch, lookup_limit, write_buffer
):
    """References to rows the archive adds resolve to placeholders while writes wait for the
    verification, and to the rows' ids when written (early: the write buffer fills)."""
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    monkeypatch.setattr("sync.writer.WRITE_BUFFER_ROWS", write_buffer)
    archive = export(output_dir=tmp_path / "a").path
    before = canonical(tmp_path / "before")
    assert User.objects.filter(instructor__isnull=False).exists()
    assert Project.objects.filter(regio__isnull=False).exists()
    delete_content()
    Status.objects.all().delete()
    Tag.objects.all().delete()
    # A dry run resolves references to rows that only the archive has (placeholders).
    preview, _ = run_import(archive, mode="replace", dry_run=True)
    assert not Event.objects.exists()
    applied, _ = run_import(archive, mode="replace")
    assert preview.counts() == applied.counts()
    assert canonical(tmp_path / "after") == before
    assert User.objects.filter(instructor__isnull=False).exists()
    assert Project.objects.filter(regio__isnull=False).exists()


def test_sequences_are_usable_after_an_import(demo, tmp_path):
    archive = export(tables=["auth.Group", "content.Tag"], output_dir=tmp_path).path
    run_import(archive)
    Tag.objects.create(name="after-import")
    from django.contrib.auth.models import Group

    Group.objects.create(name="after-import")


def test_a_failure_in_the_last_table_rolls_back_the_first(demo, tmp_path):
    exported = export(output_dir=tmp_path).path
    _, records = read_records(exported)
    last = list(records)[-1]

    def edit(label, rows):
        if label == "content.Tag":
            rows = [*rows, dict(rows[0], name="brand-new-tag")]
        if label == last:
            rows[-1] = dict(rows[-1], status=["nonexistent", "nowhere"])
        return rows

    bad = rewrite_archive(exported, tmp_path / "bad.backup.tar.gz", edit)
    before = canonical(tmp_path / "before")
    with pytest.raises(ImportFailed, match="nonexistent"):
        run_import(bad)
    assert canonical(tmp_path / "after") == before
    assert not Tag.objects.filter(name="brand-new-tag").exists()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


@pytest.mark.parametrize(
    ("edit_records", "edit_index", "message"),
    [
        (
            None,
            lambda i: i["tables"][0].update(model="content.Nope"),
            "Unknown table 'content.Nope'",
        ),
        (
            lambda label, rows: [dict(r, colour="red") for r in rows],
            lambda i: [t["fields"].update(colour="CharField") for t in i["tables"]],
            "Unknown field content.Tag.colour",
        ),
        (lambda label, rows: [dict(rows[0], name="x" * 101)], None, "over the field's max_length"),
        (lambda label, rows: [*rows, rows[0]], None, "appears twice"),
        (None, lambda i: i.update(format_version=99), "format version 99 is not supported"),
        (
            None,
            lambda i: i["tables"][0].update(model="content.tag"),
            "Unknown table 'content.tag' in the archive: the model here is content.Tag",
        ),
    ],
    ids=[
        "unknown-table",
        "unknown-field",
        "max-length",
        "duplicate-key",
        "newer-format",
        "label-in-another-case",  # Django's get_model() finds it: a KeyError, later
    ],
)
def test_bad_input_is_refused_before_any_write(seeded, tmp_path, edit_records, edit_index, message):
    exported = export(tables=["content.Tag"], output_dir=tmp_path).path
    bad = rewrite_archive(
        exported,
        tmp_path / "bad.backup.tar.gz",
        edit_records or (lambda label, rows: rows),
        edit_index or (lambda index: None),
    )
    Tag.objects.all().delete()
    with pytest.raises(CommandError, match=message):
        run_command("syncimport", str(bad), no_input=True)
    assert not Tag.objects.exists()


def test_wrong_type_and_missing_reference_are_named(demo, tmp_path):
    exported = export(tables=["content.Participant"], output_dir=tmp_path).path

    def wrong_type(label, rows):
        return [dict(rows[0], age="old"), *rows[1:]]

    bad = rewrite_archive(exported, tmp_path / "type.backup.tar.gz", wrong_type)
    with pytest.raises(CommandError, match="age"):
        run_command("syncimport", str(bad), no_input=True)

    def missing_event(label, rows):
        return [dict(rows[0], event="nowhere.event__gone"), *rows[1:]]

    bad = rewrite_archive(exported, tmp_path / "ref.backup.tar.gz", missing_event)
    with pytest.raises(CommandError, match=r"event.*nowhere\.event__gone.*neither in the archive"):
        run_command("syncimport", str(bad), no_input=True)


def test_a_second_import_is_refused_naming_the_running_one(tag_scenario):
    running = ImportRun.objects.create(
        archive="first.backup.tar.gz", mode="replace", status=ImportRun.Status.RUNNING, pid=4242
    )
    with lock_held_elsewhere(), pytest.raises(ImportFailed) as refused:
        run_import(tag_scenario)
    assert f"{running.label} (replace import of first.backup.tar.gz" in str(refused.value)
    assert f"syncjobs --cancel {running.label}" in str(refused.value)
    # Recorded as refused (the lock was taken first; writing the row did not mean waiting).
    refused_run = ImportRun.objects.exclude(pk=running.pk).get()
    assert (refused_run.status, refused_run.error) == ("failed", str(refused.value))
    assert refused_run.error_detail == {"reason": "refused"}
    assert "e" not in tags()


IN_MEMORY_LOCK_HOLDER = """
import sys, django
django.setup()
from django.db import connections
from sync.locking import import_lock
connections["default"].settings_dict["NAME"] = sys.argv[1]
with import_lock("default"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.mark.skipif(connection.vendor != "sqlite", reason="in-memory databases are SQLite's")
def test_another_process_importing_into_its_own_in_memory_database_blocks_nothing(tag_scenario):
    # given: another process importing into its in-memory database of the same name (two test
    # runs side by side), which is not this process's database
    assert connection.is_in_memory_db()
    other = subprocess.Popen(
        [sys.executable, "-c", IN_MEMORY_LOCK_HOLDER, connection.settings_dict["NAME"]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
    try:
        assert other.stdout.readline() == "held\n"

        # when / then: an import into this process's database runs
        result, _ = run_import(tag_scenario)
        assert result.tables["content.Tag"].new == 1
    finally:
        other.communicate("")


def test_sync_state_records_the_import(tag_scenario):
    result, run = run_import(tag_scenario)
    state = SyncState.objects.get(database="default")
    assert state.last_import_at == run.finished_at
    assert str(state.last_sync_id) == result.backup_id


def test_confirmation_is_required_without_no_input(tag_scenario, monkeypatch):
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError, match="cancelled"):
        run_command("syncimport", str(tag_scenario))
    assert "e" not in tags()
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    run_command("syncimport", str(tag_scenario))
    assert tags()["e"] == "new"


@pytest.mark.parametrize("damage", ["checksum", "not-json"])
def test_a_damaged_archive_writes_nothing(seeded, tmp_path, damage):
    exported = export(tables=["content.Tag", "content.Status"], output_dir=tmp_path).path

    def edit_records(label, rows):
        return [*rows, dict(rows[0], name="zz-new")] if label == "content.Tag" else rows

    def edit_index(index):
        if damage == "checksum":
            index["tables"][-1]["sha256"] = "0" * 64

    def edit_bytes(label, data):
        if damage == "not-json" and label == "content.Tag":
            return data.rsplit(b"\n", 2)[0] + b"\n{not json\n"  # the last line
        return data

    bad = rewrite_archive(
        exported, tmp_path / "bad.backup.tar.gz", edit_records, edit_index, edit_bytes
    )
    before = canonical(tmp_path / "before", ["content.Tag", "content.Status"])
    with pytest.raises(ImportFailed, match=r"sha256|not valid JSON"):
        run_import(bad)
    assert canonical(tmp_path / "after", ["content.Tag", "content.Status"]) == before


def test_m2m_targets_load_before_the_rows_that_point_at_them(db, tmp_path):
    """auth.Group sorts before auth.Permission by name; its M2M must still find the new
    permission, so Permission (and ContentType) load first."""
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType

    event_type = ContentType.objects.get_for_model(Event)
    publish = Permission.objects.create(
        codename="publish_event", name="Can publish event", content_type=event_type
    )
    Group.objects.create(name="editors").permissions.add(publish)
    archive = export(tables=["auth.Group"], with_dependencies=True, output_dir=tmp_path).path
    Group.objects.all().delete()
    publish.delete()

    run_import(archive, mode="append")

    editors = Group.objects.get(name="editors")
    assert list(editors.permissions.values_list("codename", flat=True)) == ["publish_event"]


STAMP = "2026-01-01T00:00:00+00:00"
FIELDS = ["xmlid", "n", "updated_at"]


@pytest.mark.parametrize(
    ("fields", "line", "read"),
    [
        (
            ["xmlid", "n", "ok", "note", "updated_at"],
            b'{"xmlid":"x.1","n":-1.5e3,"ok":true,"note":null,"updated_at":"%s","more":[1]}',
            ("x.1", STAMP),
        ),
        (FIELDS, b'{"xmlid":"x.1","n":{"updated_at":"2099-01-01"},"updated_at":"%s"}', None),
        (FIELDS, b'{"xmlid":"x.1","n":"a,\\"updated_at\\":\\"2099","updated_at":"%s"}', None),
        (FIELDS, b'{"xmlid":"x\\"1","n":1,"updated_at":"%s"}', None),
        (FIELDS, b'{"xmlid": "x.1","n":1,"updated_at":"%s"}', None),
        (FIELDS, b'{"n":1,"xmlid":"x.1","updated_at":"%s"}', None),
    ],
    ids=["plain", "object-before", "escapes-before", "escaped-key", "spaces", "other-order"],
)
def test_stamp_peek_reads_only_lines_it_can_read_exactly(fields, line, read):
    line = line % STAMP.encode()
    orjson.loads(line)  # each case is valid JSON
    match = stamp_peek(fields, "xmlid")(line)
    assert (None if match is None else (match[1].decode(), match[2].decode())) == read


def test_garbage_collection_settings_are_restored_after_a_failed_import(seeded, tmp_path):
    before = gc.get_threshold()
    exported = export(tables=["content.Tag"], output_dir=tmp_path).path
    broken = rewrite_archive(
        exported, tmp_path / "broken.tar.gz", lambda label, records: [*records, records[0]]
    )
    with pytest.raises(ImportFailed, match="appears twice"):
        run_import(broken, mode="replace")
    assert gc.get_threshold() == before


@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["in-a-set", "in-sqlite"])
def test_a_key_repeated_in_a_later_chunk_is_refused(
    seeded, tmp_path, settings, monkeypatch, lookup_limit
):
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    monkeypatch.setattr("sync.importer.CHUNK", 2)
    exported = export(tables=["content.Tag"], output_dir=tmp_path).path
    before = tags()
    repeated = rewrite_archive(
        exported, tmp_path / "repeated.tar.gz", lambda label, rows: [*rows, rows[0]]
    )
    with pytest.raises(ImportFailed, match=r"content.Tag '.*': appears twice in the archive"):
        run_import(repeated, mode="replace")
    assert tags() == before


def test_tables_option_imports_only_the_chosen_tables(seeded, tmp_path):
    archive = export(tables=["content.Tag", "content.Status"], output_dir=tmp_path).path
    Tag.objects.update(description="edited here")
    Status.objects.update(description="edited here")

    out = run_command("syncimport", str(archive), tables=["content.Tag"], no_input=True)

    assert "tags:" in out and "statuses:" not in out
    assert not Tag.objects.filter(description="edited here").exists()
    assert Status.objects.exclude(description="edited here").count() == 0


def test_tables_option_naming_a_table_the_archive_lacks_is_refused(seeded, tmp_path):
    archive = export(tables=["content.Tag"], output_dir=tmp_path).path
    with pytest.raises(CommandError, match=r"Table content\.Status is not in the archive"):
        run_command("syncimport", str(archive), tables=["content.Status"], no_input=True)


def test_quiet_import_prints_nothing_and_still_imports(tag_scenario):
    assert run_command("syncimport", str(tag_scenario), no_input=True, quiet=True) == ""
    assert tags()["e"] == "new"


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_replace_reports_what_deletions_cascade_to(demo, tmp_path, dry_run):
    exported = export(tables=["content.Event"], output_dir=tmp_path).path
    gone = Event.objects.filter(participants__isnull=False).distinct().first()
    participants = Participant.objects.filter(event=gone).count()
    links = gone.event_instructors.count()
    without = rewrite_archive(
        exported,
        tmp_path / "without.tar.gz",
        lambda label, rows: [r for r in rows if r["xmlid"] != gone.xmlid],
    )

    out = run_command("syncimport", str(without), dry_run=dry_run, no_input=True)

    assert "events: 0 new, 0 updated, 1 deleted" in out
    assert f"cascade: {participants} participants deleted by on_delete rules" in out
    assert f"cascade: {links} event instructors deleted by on_delete rules" in out
    assert Event.objects.filter(pk=gone.pk).exists() == dry_run
    assert Participant.objects.filter(event_id=gone.pk).count() == (participants if dry_run else 0)


def test_import_run_records_what_was_done_and_who_started_it(tag_scenario):
    run_command("syncimport", str(tag_scenario), mode="update", dry_run=True)

    run = ImportRun.objects.get()
    assert (run.archive, run.mode, run.dry_run) == (str(tag_scenario), "update", True)
    assert run.started_by.startswith("syncimport (")
    assert run.status == ImportRun.Status.SUCCEEDED and run.error == ""
    assert run.counts["content.Tag"]["new"] == 1 and run.counts["content.Tag"]["skipped"] == 1
    assert run.finished_at >= run.started_at
