"""What an import does with awkward data: references to rows replace mode deletes, keys that
share a hash, unique values moving between rows, rows a default manager hides — and that a dry
run predicts every real run exactly (the same counts, cascades, changes and refusals)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crearis.content.models import (
    Event,
    Image,
    Instructor,
    Location,
    Participant,
    Post,
    Project,
    Status,
    Tag,
    User,
)
from sync.importer import ImportFailed, ImportResult
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from tests.archive_tools import read_records, rewrite_archive
from tests.awkward.models import Article, Node, Seat
from tests.cli import assert_refused
from tests.fingerprint import fingerprint

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------------


def exported(tmp_path, name: str = "archive", tables=None):
    return export(tables=tables, output_dir=tmp_path / name, compression="none").path


def canonical(records: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {label: sorted(rows, key=repr) for label, rows in records.items()}


def database_as_archive(tmp_path, archive) -> dict:
    """The records of the archive's tables as this database holds them now."""
    index, _ = read_records(archive)
    tables = [table["model"] for table in index["tables"]]
    return canonical(read_records(exported(tmp_path, "check", tables))[1])


def outcome(archive, **options) -> tuple | str:
    """What an import reports: its counts, cascades, total and changes; or its refusal."""
    try:
        result, _ = run_import(archive, collect_changes=True, **options)
    except ImportFailed as exc:
        return str(exc)
    return summary(result)


def summary(result: ImportResult) -> tuple:
    changes = sorted(
        (label, repr(change.key), change.action, tuple(sorted(change.fields)))
        for label, diff in result.tables.items()
        for change in diff.changes
    )
    return result.counts(), dict(result.cascaded), result.total_changes, changes


def status(table: str) -> Status:
    return Status.objects.filter(table=table).first()


def new_project(code: str, owner: User, **fields) -> Project:
    return Project.objects.create(
        domaincode=code, name=code, owner=owner, status=status("projects"), **fields
    )


def new_event(xmlid: str, project: Project, **fields) -> Event:
    return Event.objects.create(
        xmlid=xmlid, project=project, name=xmlid, status=status("events"), **fields
    )


def new_image(xmlid: str, project: Project, **fields) -> Image:
    return Image.objects.create(
        xmlid=xmlid, project=project, name=xmlid, url="https://x.example/i.jpg",
        status=status("images"), **fields,
    )  # fmt: skip


def new_user(sysmail: str) -> User:
    return User.objects.create(sysmail=sysmail)


def archive_without(tmp_path, predicate, tables=None):
    """An export, less the records ``predicate(label, record)`` picks."""
    return rewrite_archive(
        exported(tmp_path, tables=tables),
        tmp_path / "edited.tar.gz",
        lambda label, rows: [r for r in rows if not predicate(label, r)],
    )


# -- scenarios: each changes the database (and maybe the archive) after an export -------------


def self_references_change(tmp_path):
    """Project.regio (a reference into its own table, filled in a second pass) moves: to a
    region the archive lacks (deleted), to none, and between archived projects."""
    archive = exported(tmp_path)
    regio0, *rest = Project.objects.order_by("domaincode")
    owner = User.objects.first()
    elsewhere = new_project("regio-new", owner, type="regio")
    Project.objects.filter(pk=rest[0].pk).update(regio=elsewhere)
    Project.objects.filter(pk=rest[1].pk).update(regio=None)
    Project.objects.filter(pk=regio0.pk).update(regio=rest[2])
    new_project("child-of-new", owner, regio=elsewhere)
    return archive, {}


def cycle_changes(tmp_path):
    """User → Instructor → Image → Project → User, each reference moved, some to rows the
    archive lacks (a PROTECTed owner among them): the import moves them back first."""
    archive = exported(tmp_path)
    stranger = new_user("stranger@crearis.example")
    project = Project.objects.order_by("domaincode").last()
    Project.objects.filter(pk=project.pk).update(owner=stranger)  # PROTECT
    extra = new_image("extra.image__new", project, owner=stranger)
    instructor = Instructor.objects.filter(image__isnull=False).first()
    Instructor.objects.filter(pk=instructor.pk).update(image=extra)  # deferred, SET_NULL
    image = Image.objects.order_by("xmlid").first()
    Image.objects.filter(pk=image.pk).update(owner=stranger, project=Project.objects.first())
    user = User.objects.filter(instructor__isnull=False).first()
    other = Instructor.objects.exclude(users=user).first()
    User.objects.filter(pk=user.pk).update(instructor=other)
    User.objects.filter(pk=User.objects.filter(instructor__isnull=True).first().pk).update(
        instructor=instructor
    )
    return archive, {}


def deletions_cascade(tmp_path):
    """Rows the archive lacks, with rows hanging off them by CASCADE and SET_NULL; archived
    rows that the target points at them (moved back before the deletion)."""
    archive = exported(tmp_path)
    Event.objects.order_by("xmlid").last().delete()  # the archive adds it again
    owner = User.objects.first()
    gone = new_project("gone", owner)
    doomed = new_event("gone.event__1", gone)
    Participant.objects.create(
        xmlid="gone.participant__1", event=doomed, name="x", status=status("participants")
    )
    moved = Participant.objects.order_by("xmlid").first()
    Participant.objects.filter(pk=moved.pk).update(event=doomed)  # CASCADE, moved back
    Post.objects.filter(pk=Post.objects.first().pk).update(event=doomed)  # SET_NULL
    place = Location.objects.create(
        xmlid="gone.location__1", project=gone, name="x", status=status("locations")
    )
    Event.objects.filter(pk=Event.objects.first().pk).update(location=place)
    return archive, {}


def m2m_changes(tmp_path):
    """Tag sets change: a tag the archive lacks, links added and removed."""
    archive = exported(tmp_path)
    extra = Tag.objects.create(name="not-archived")
    first, second = Event.objects.order_by("xmlid")[:2]
    first.tags.add(extra)
    first.tags.add(*Tag.objects.exclude(pk__in=first.tags.all())[:1])
    second.tags.clear()
    return archive, {}


def deferred_reference_to_a_deleted_row(tmp_path):
    """The archive's record refers (second pass) to a row that it lacks: refused."""
    owner = User.objects.first()
    lost = new_project("lost-region", owner, type="regio")
    Project.objects.filter(domaincode="proj00000").update(regio=lost)
    return archive_without(tmp_path, lambda label, r: r.get("domaincode") == "lost-region"), {}


def reference_to_a_deleted_row(tmp_path):
    """Images of a project the archive lacks: refused, not deleted with the project."""
    project = Project.objects.order_by("domaincode").last().domaincode
    lacking = archive_without(
        tmp_path, lambda label, r: label == "content.Project" and r["domaincode"] == project
    )
    return lacking, {}


def m2m_item_to_a_deleted_row(tmp_path):
    extra = Tag.objects.create(name="lost-tag")
    Event.objects.first().tags.add(extra)
    return archive_without(tmp_path, lambda label, r: r.get("name") == "lost-tag"), {}


def unique_values_move(tmp_path):
    """Seat numbers swapped, a nickname taken over from a seat the import deletes, a number
    taken by a new seat from one it deletes."""
    Seat.objects.create(code="a", number=1, nickname="front")
    Seat.objects.create(code="b", number=2, nickname=None)
    Seat.objects.create(code="c", number=3, nickname="aisle")
    archive = exported(tmp_path, tables=["awkward.Seat"])
    Seat.objects.filter(code="c").delete()
    Seat.objects.filter(code="a").update(number=10)
    Seat.objects.filter(code="b").update(number=1)
    Seat.objects.filter(code="a").update(number=2, nickname=None)
    Seat.objects.create(code="x", number=3, nickname="front")
    Seat.objects.create(code="y", number=4, nickname="aisle")
    return archive, {}


def some_tables(tmp_path):
    """Only projects and images are imported: a project the archive lacks goes with the events
    hanging off it (not imported, so they cascade); an archived image moved to it comes back
    first, so it does not."""
    tables = ["content.Project", "content.Image"]
    archive = exported(tmp_path, tables=tables)
    gone = new_project("gone", User.objects.first())
    new_event("gone.event__1", gone)
    Image.objects.filter(pk=Image.objects.order_by("xmlid").first().pk).update(project=gone)
    return archive, {"tables": tables}


def stamps(model, pk, delta):
    model.objects.filter(pk=pk).update(updated_at=model.objects.get(pk=pk).updated_at + delta)


def update_mode_timestamps(tmp_path):
    """Update mode: archived records older, equal and newer than the target's, references
    among the changes, and rows only the target has."""
    archive = exported(tmp_path)
    newer, older, equal = Event.objects.order_by("xmlid")[:3]
    Event.objects.filter(pk=newer.pk).update(name="target's, newer")
    stamps(Event, newer.pk, timedelta(days=1))
    Event.objects.filter(pk=older.pk).update(name="target's, older", location=None)
    stamps(Event, older.pk, -timedelta(days=1))
    Event.objects.filter(pk=equal.pk).update(name="target's, same time")
    tag = Tag.objects.first()
    Tag.objects.filter(pk=tag.pk).update(description="older")
    stamps(Tag, tag.pk, -timedelta(days=1))
    Tag.objects.create(name="only-in-target")
    Event.objects.filter(pk=Event.objects.last().pk).delete()
    return archive, {"mode": "update"}


def append_mode(tmp_path):
    archive = exported(tmp_path)
    Event.objects.filter(pk=Event.objects.last().pk).delete()
    Event.objects.filter(pk=Event.objects.first().pk).update(name="kept as it is")
    Tag.objects.create(name="only-in-target")
    return archive, {"mode": "append"}


SCENARIOS = [
    self_references_change,
    cycle_changes,
    deletions_cascade,
    m2m_changes,
    deferred_reference_to_a_deleted_row,
    reference_to_a_deleted_row,
    m2m_item_to_a_deleted_row,
    unique_values_move,
    some_tables,
    update_mode_timestamps,
    append_mode,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["key-map", "per-chunk"])
def test_the_dry_run_predicts_the_real_run(demo, tmp_path, settings, scenario, lookup_limit):
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    archive, options = scenario(tmp_path)
    before = fingerprint()

    preview = outcome(archive, dry_run=True, **options)
    assert fingerprint() == before, "the dry run changed the database"
    applied = outcome(archive, **options)

    assert preview == applied
    if isinstance(applied, str):
        assert fingerprint() == before, "a refused import changed the database"
    elif options.get("mode", "replace") == "replace":
        assert database_as_archive(tmp_path, archive) == canonical(read_records(archive)[1])


# -- references to rows replace mode deletes -------------------------------------------------


REFUSALS = {
    reference_to_a_deleted_row: "field 'project' refers to content.Project 'regio0', which "
    "is not in the archive: replace mode would delete it (the archive is inconsistent)",
    m2m_item_to_a_deleted_row: "field 'tags' refers to content.Tag 'lost-tag', which is not in "
    "the archive",
    deferred_reference_to_a_deleted_row: "content.Project 'proj00000': field 'regio' refers to "
    "content.Project 'lost-region', which is not in the archive",
}


@pytest.mark.parametrize("scenario", REFUSALS, ids=lambda s: s.__name__)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_replace_refuses_records_referring_to_rows_it_would_delete(
    demo, tmp_path, scenario, dry_run
):
    """Such references used to resolve against the target; replace then deleted the row as
    "not in the archive" and its on_delete took the archive's records with it."""
    archive, _ = scenario(tmp_path)
    assert_refused(str(archive), dry_run=dry_run, no_input=True, expected=REFUSALS[scenario])


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_replace_refuses_a_link_into_its_own_table_to_a_row_it_would_delete(db, tmp_path, dry_run):
    """Links into the record's own table are checked once the table has loaded."""
    a, b, c = (Node.objects.create(name=name) for name in "abc")
    a.links.add(b)
    c.links.add(a)
    edited = archive_without(tmp_path, lambda label, r: r["name"] == "b", ["awkward.Node"])
    assert_refused(
        str(edited),
        dry_run=dry_run,
        no_input=True,
        expected="awkward.Node 'a': field 'links' refers to awkward.Node 'b', which is not in "
        "the archive",
    )


def test_references_into_a_table_not_imported_resolve_against_the_target(demo, tmp_path):
    archive = exported(tmp_path, tables=["content.Event"])
    new_project("not-archived", User.objects.first())
    projects = fingerprint()["content_project"]

    result, _ = run_import(archive, mode="replace")

    assert fingerprint()["content_project"] == projects
    assert result.tables["content.Event"].unchanged == Event.objects.count()
    assert result.total_changes == 0


def test_the_diff_shows_second_pass_changes_beside_the_others(demo, tmp_path):
    """Project.regio is written in the second pass; its change belongs to the record's."""
    archive = exported(tmp_path)
    Project.objects.filter(domaincode="proj00000").update(name="renamed here", regio=None)
    for dry_run in (True, False):
        result, _ = run_import(archive, dry_run=dry_run, collect_changes=True)
        (change,) = result.tables["content.Project"].changes
        assert (change.key, set(change.fields)) == ("proj00000", {"name", "regio"})


# -- keys compared exactly -------------------------------------------------------------------


@pytest.mark.parametrize("lookup_limit", [100_000, 0], ids=["in-a-set", "in-sqlite"])
def test_keys_that_share_a_hash_are_told_apart(db, tmp_path, settings, lookup_limit):
    """Seats keyed by id: -1 and -2 share a hash, so do 1 and 2**61. The archive holds -1, -2
    and 1; the target holds 1 and 2**61. Replace must add two and delete 2**61."""
    settings.SYNC_KEYS = {"awkward.Seat": ["id"]}
    settings.SYNC_KEY_MAP_LIMIT = lookup_limit
    for pk, number in [(-1, 1), (-2, 2), (1, 3), (2**61, 4)]:
        Seat.objects.create(id=pk, code=f"s{number}", number=number)
    edited = archive_without(tmp_path, lambda label, r: r["id"] == 2**61, ["awkward.Seat"])
    Seat.objects.filter(id__in=[-1, -2]).delete()

    result, _ = run_import(edited, mode="replace")

    assert sorted(Seat.objects.values_list("id", flat=True)) == [-2, -1, 1]
    diff = result.tables["awkward.Seat"]
    assert (diff.new, diff.unchanged, diff.deleted) == (2, 1, 1)


# -- rows a default manager hides ------------------------------------------------------------


@pytest.fixture
def articles(db):
    Article.objects.create(slug="shown", title="shown")
    Article.objects.create(slug="hidden", title="hidden", hidden=True)


def test_export_includes_rows_the_default_manager_hides(articles, tmp_path):
    _, records = read_records(exported(tmp_path, tables=["awkward.Article"]))
    assert sorted(r["slug"] for r in records["awkward.Article"]) == ["hidden", "shown"]


@pytest.mark.parametrize("mode", ["replace", "update", "append"])
def test_import_matches_rows_the_default_manager_hides(articles, tmp_path, mode):
    archive = exported(tmp_path, tables=["awkward.Article"])
    Article._base_manager.filter(slug="hidden").update(title="changed here")
    before = fingerprint()

    preview = outcome(archive, mode=mode, dry_run=True)
    assert fingerprint() == before
    applied = outcome(archive, mode=mode)

    assert preview == applied
    counts = applied[0]["awkward.Article"]
    assert counts["new"] == counts["deleted"] == 0
    titles = dict(Article._base_manager.values_list("slug", "title"))
    expected = "changed here" if mode == "append" else "hidden"
    assert titles == {"shown": "shown", "hidden": expected}


def test_import_into_an_empty_table_restores_hidden_rows(articles, tmp_path):
    archive = exported(tmp_path, tables=["awkward.Article"])
    Article._base_manager.all().delete()
    run_import(archive)
    assert Article._base_manager.filter(slug="hidden", hidden=True).exists()


# -- unique values moving between rows -------------------------------------------------------


def seats(using: str = "default") -> dict[str, tuple]:
    rows = Seat.objects.using(using).values_list("code", "number", "nickname")
    return {code: (number, nickname) for code, number, nickname in rows}


def make_seats(rows: dict[str, tuple], using: str = "default") -> None:
    for code, (number, nickname) in rows.items():
        Seat.objects.using(using).create(code=code, number=number, nickname=nickname)


def seat_archive(tmp_path, rows: dict[str, tuple], using: str = "default"):
    """An archive of exactly these seats (the table is emptied again afterwards)."""
    make_seats(rows, using)
    archive = export(
        tables=["awkward.Seat"], using=using, output_dir=tmp_path / "seats", compression="none"
    ).path
    Seat.objects.using(using).all().delete()
    return archive


ARCHIVED_SEATS = {"a": (1, "front"), "b": (2, None), "c": (3, "aisle"), "d": (4, "back")}
MOVES = {
    "swapped": {"a": (2, None), "b": (1, "front"), "c": (3, "aisle"), "d": (4, "back")},
    "taken-from-deleted": {"x": (1, "front"), "y": (3, "aisle"), "b": (2, None)},
    "shifted": {"a": (2, "aisle"), "b": (3, "back"), "c": (4, None), "d": (5, "front")},
    "cycle": {"a": (4, "back"), "b": (1, "front"), "c": (2, None), "d": (3, "aisle")},
}


@pytest.mark.parametrize("target", MOVES.values(), ids=MOVES.keys())
@pytest.mark.parametrize("chunk", [2000, 1], ids=["one-chunk", "chunk-per-row"])
@pytest.mark.parametrize("write_buffer", [20_000, 1], ids=["writes-at-end", "writes-early"])
def test_replace_moves_unique_values_between_rows(
    db, tmp_path, monkeypatch, target, chunk, write_buffer
):
    monkeypatch.setattr("sync.importer.CHUNK", chunk)
    monkeypatch.setattr("sync.writer.WRITE_BUFFER_ROWS", write_buffer)
    archive = seat_archive(tmp_path, ARCHIVED_SEATS)
    make_seats(target)

    preview = outcome(archive, dry_run=True)
    applied = outcome(archive)

    assert preview == applied
    assert seats() == ARCHIVED_SEATS


@pytest.mark.parametrize("mode", ["update", "append"])
def test_a_new_record_taking_a_value_a_kept_row_holds_is_refused(db, tmp_path, mode):
    archive = seat_archive(tmp_path, {"a": (1, "front"), "new": (2, None)})
    make_seats({"a": (1, "front"), "other": (2, None)})
    for dry_run in (True, False):
        assert_refused(
            str(archive),
            mode=mode,
            dry_run=dry_run,
            no_input=True,
            expected="awkward.Seat 'new': field 'number' value 2 is held by awkward.Seat "
            "'other', which keeps it",
        )


def test_update_mode_refuses_a_swap_whose_other_half_is_not_newer(db, tmp_path):
    """Update mode rewrites only records without ``updated_at`` that differ; Seat has none,
    so both rows are rewritten and the swap goes through; a record kept as it is (here:
    not in the archive) keeps its value, and taking it is a conflict."""
    archive = seat_archive(tmp_path, {"a": (2, None), "b": (1, None)})
    make_seats({"a": (1, None), "b": (2, None)})
    assert outcome(archive, mode="update", dry_run=True) == outcome(archive, mode="update")
    assert seats() == {"a": (2, None), "b": (1, None)}

    Seat.objects.all().delete()
    make_seats({"a": (1, None), "b": (3, None), "c": (2, None)})
    assert_refused(
        str(archive),
        mode="update",
        no_input=True,
        expected="awkward.Seat 'a': field 'number' value 2 is held by awkward.Seat 'c'",
    )


@pytest.mark.parametrize("chunk", [2000, 1], ids=["one-chunk", "chunk-per-row"])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_unique_value_given_twice_in_the_archive_is_refused(
    db, tmp_path, monkeypatch, chunk, dry_run
):
    monkeypatch.setattr("sync.importer.CHUNK", chunk)
    archive = seat_archive(tmp_path, {"a": (1, "front"), "b": (2, "back")})
    edited = rewrite_archive(
        archive,
        tmp_path / "twice.tar.gz",
        lambda label, rows: [dict(r, nickname="front") for r in rows],
    )
    assert_refused(
        str(edited),
        dry_run=dry_run,
        no_input=True,
        expected="awkward.Seat 'b': field 'nickname' value 'front' is given to awkward.Seat "
        "'a' too",
    )


@pytest.mark.crossdb
@pytest.mark.django_db(databases=["default", "pg", "maria"], transaction=True)
@pytest.mark.parametrize("alias", ["pg", "maria"])
@pytest.mark.parametrize("target", MOVES.values(), ids=MOVES.keys())
def test_unique_values_move_on_postgresql_and_mariadb(tmp_path, monkeypatch, alias, target):
    monkeypatch.setattr("sync.importer.CHUNK", 1)
    archive = seat_archive(tmp_path, ARCHIVED_SEATS, using=alias)
    make_seats(target, alias)

    preview = outcome(archive, using=alias, dry_run=True)
    applied = outcome(archive, using=alias)

    assert preview == applied
    assert seats(alias) == ARCHIVED_SEATS


@pytest.mark.crossdb
@pytest.mark.django_db(databases=["default", "pg", "maria"], transaction=True)
@pytest.mark.parametrize("alias", ["pg", "maria"])
def test_a_unique_conflict_is_named_on_postgresql_and_mariadb(tmp_path, alias):
    archive = seat_archive(tmp_path, {"a": (1, "front"), "new": (2, None)}, using=alias)
    make_seats({"a": (1, "front"), "other": (2, None)}, alias)
    for dry_run in (True, False):
        assert_refused(
            str(archive),
            mode="update",
            dry_run=dry_run,
            no_input=True,
            database=alias,
            using=alias,
            expected="awkward.Seat 'new': field 'number' value 2 is held by awkward.Seat "
            "'other', which keeps it",
        )
