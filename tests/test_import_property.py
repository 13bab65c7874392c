"""A property-based check of what each import mode promises, on small generated worlds.

Hypothesis draws two small states of the content and test models over one small key space —
the archive's and the target's — with the awkward parts: CASCADE, SET_NULL and PROTECT
foreign keys, a self reference (``Project.regio``, second pass), M2M sets with and without a
through model, an M2M to its own table, unique values besides the key that swap or move
(``Seat``), generic references (``Note`` on ``Article``, which cascades through a
``GenericRelation``), timestamps older, equal and newer, and now and then only some tables
imported. Then, for replace, update and append:

(a) the dry run reports what the real run does: counts, cascades, total, plan entries, or
    the same refusal;
(b) replace leaves the imported tables equal to the archive exactly (when every table is
    imported and the archive is consistent it must never refuse), and a refusal changes
    nothing;
(c) update and append delete nothing and change no row the report does not call inserted or
    updated; what they insert or update equals the archive's record;
(d) the same import again changes nothing.

Each example runs in a savepoint rolled back at its end, so examples share the fixture's base
rows (statuses, users) and nothing else. The budget is small (the suite's time); the
regressions the search found are the explicit tests at the end.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import sync.importer
from crearis.content.models import (
    Event,
    EventInstructor,
    Instructor,
    Location,
    Participant,
    Post,
    Project,
    Status,
    Tag,
    User,
)
from sync.importer import ImportFailed
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from tests.archive_tools import read_records, rewrite_archive
from tests.awkward.models import Article, Label, Node, Note, Seat
from tests.fingerprint import fingerprint
from tests.plan_tools import plan_entries

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
STAMPS = [T0 - timedelta(days=1), T0, T0 + timedelta(days=1)]
USERS = ["u0@crearis.example", "u1@crearis.example"]

TAGS = ["t0", "t1", "t2"]
PROJECTS = ["p0", "p1", "p2"]
LOCATIONS = ["l0", "l1"]
EVENTS = ["e0", "e1", "e2"]
POSTS = ["po0", "po1"]
PARTICIPANTS = ["pa0", "pa1", "pa2"]
INSTRUCTORS = ["i0", "i1"]
SEATS = ["s0", "s1", "s2"]
NODES = ["n0", "n1", "n2"]
ARTICLES = ["a0", "a1"]
NOTES = ["no0", "no1"]
LABEL_NAMES = ["red", "blue"]

# Load order of the tables, and the order to empty them in reverse.
MODELS = [Tag, Project, Location, Instructor, Event, EventInstructor, Post, Participant]
MODELS += [Seat, Node, Article, Note, Label]
LABELS = [m._meta.label for m in MODELS]
# The tables imported: all (None) or some, whatever they refer to.
SUBSETS = st.none() | st.lists(st.sampled_from(LABELS), min_size=1, unique=True)
# Records left out of the archive after the export (table, n-th record): an archive that may
# refer to records it lacks, as a buggy tool or a hand edit leaves it.
DROPS = st.lists(st.tuples(st.sampled_from(LABELS), st.integers(0, 3)), max_size=2)


# -- strategies ------------------------------------------------------------------------------


def present(keys: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(keys), unique=True).map(sorted)


@st.composite
def worlds(draw) -> dict[str, dict[str, dict[str, Any]]]:
    """One state of the tables: kind → key → attributes, every reference to a present key."""
    stamp = st.sampled_from(range(len(STAMPS)))
    text = st.sampled_from(["", "x", "y"])
    world: dict[str, dict[str, dict[str, Any]]] = {}
    tags = draw(present(TAGS))
    world["tag"] = {k: {"description": draw(text), "stamp": draw(stamp)} for k in tags}
    projects = draw(present(PROJECTS))
    world["project"] = {
        k: {
            "name": draw(text),
            "owner": draw(st.sampled_from(USERS)),
            "regio": draw(st.none() | st.sampled_from(projects)),
            "stamp": draw(stamp),
        }
        for k in projects
    }
    locations = draw(present(LOCATIONS)) if projects else []
    world["location"] = {
        k: {"project": draw(st.sampled_from(projects)), "name": draw(text), "stamp": draw(stamp)}
        for k in locations
    }
    world["instructor"] = {
        k: {"name": draw(text), "stamp": draw(stamp)} for k in draw(present(INSTRUCTORS))
    }
    instructors = sorted(world["instructor"])
    events = draw(present(EVENTS)) if projects else []
    world["event"] = {
        k: {
            "project": draw(st.sampled_from(projects)),
            "location": draw(st.none() | st.sampled_from(locations)) if locations else None,
            "instructor": draw(st.none() | st.sampled_from(instructors)) if instructors else None,
            "name": draw(text),
            "tags": draw(present(tags)) if tags else [],
            "stamp": draw(stamp),
        }
        for k in events
    }
    pairs = [(e, i) for e in events for i in instructors]
    world["eventinstructor"] = (
        {p: {"added": draw(stamp), "stamp": draw(stamp)} for p in draw(present(pairs))}
        if pairs
        else {}
    )
    world["post"] = {
        k: {
            "project": draw(st.sampled_from(projects)),
            "event": draw(st.none() | st.sampled_from(events)) if events else None,
            "name": draw(text),
            "tags": draw(present(tags)) if tags else [],
            "stamp": draw(stamp),
        }
        for k in (draw(present(POSTS)) if projects else [])
    }
    world["participant"] = {
        k: {
            "event": draw(st.sampled_from(events)),
            "name": draw(text),
            "age": draw(st.none() | st.integers(0, 2)),
            "stamp": draw(stamp),
        }
        for k in (draw(present(PARTICIPANTS)) if events else [])
    }
    seats = draw(present(SEATS))
    numbers = draw(st.permutations(range(1, len(SEATS) + 2)))
    nicknames = draw(st.permutations(["front", "back", None, None]))
    world["seat"] = {
        k: {"number": numbers[i], "nickname": nicknames[i]} for i, k in enumerate(seats)
    }
    nodes = draw(present(NODES))
    world["node"] = {k: {"links": draw(present(nodes)) if nodes else []} for k in nodes}
    articles = draw(present(ARTICLES))
    world["article"] = {k: {"title": draw(text), "hidden": draw(st.booleans())} for k in articles}
    world["note"] = {
        k: {"article": draw(st.sampled_from(articles)), "text": draw(text)}
        for k in (draw(present(NOTES)) if articles else [])
    }
    # Labels on articles and tags, keyed by what they name (a generic reference in the key).
    named = [("article", a) for a in articles] + [("tag", t) for t in tags]
    pairs = [(kind, k, name) for kind, k in named for name in LABEL_NAMES]
    world["label"] = {p: {} for p in draw(present(pairs))} if pairs else {}
    return world


def repaired(world: dict) -> dict:
    """``world`` with its references to absent keys undone: a nullable one emptied, an M2M
    item left out, a record whose required reference is absent left out."""
    projects = world["project"]
    for a in projects.values():
        a["regio"] = a["regio"] if a["regio"] in projects else None
    world["location"] = {k: a for k, a in world["location"].items() if a["project"] in projects}
    world["event"] = {k: a for k, a in world["event"].items() if a["project"] in projects}
    for a in world["event"].values():
        a["location"] = a["location"] if a["location"] in world["location"] else None
        a["instructor"] = a["instructor"] if a["instructor"] in world["instructor"] else None
        a["tags"] = [t for t in a["tags"] if t in world["tag"]]
    world["eventinstructor"] = {
        (e, i): a
        for (e, i), a in world["eventinstructor"].items()
        if e in world["event"] and i in world["instructor"]
    }
    world["post"] = {k: a for k, a in world["post"].items() if a["project"] in projects}
    for a in world["post"].values():
        a["event"] = a["event"] if a["event"] in world["event"] else None
        a["tags"] = [t for t in a["tags"] if t in world["tag"]]
    world["participant"] = {
        k: a for k, a in world["participant"].items() if a["event"] in world["event"]
    }
    for a in world["node"].values():
        a["links"] = [n for n in a["links"] if n in world["node"]]
    world["note"] = {k: a for k, a in world["note"].items() if a["article"] in world["article"]}
    world["label"] = {
        (kind, k, name): a for (kind, k, name), a in world["label"].items() if k in world[kind]
    }
    return world


@st.composite
def archive_and_target(draw) -> tuple[dict, dict]:
    """Two states: drawn apart, or the target the archive with some records taken from
    another state or left out (so most records match and a few differ)."""
    archive, other = draw(worlds()), draw(worlds())
    if draw(st.booleans()):
        return archive, other
    target: dict = {}
    for kind in archive:
        target[kind] = {}
        for key in sorted(archive[kind].keys() | other[kind].keys(), key=repr):
            source = draw(st.sampled_from(["archive", "archive", "other", "none"]))
            chosen = (archive if source == "archive" else other)[kind].get(key)
            if source != "none" and chosen is not None:
                target[kind][key] = copy.deepcopy(chosen)
    if target["seat"]:  # unique values: the other state's may clash with the archive's
        numbers = draw(st.permutations(range(1, len(SEATS) + 2)))
        nicknames = draw(st.permutations(["front", "back", None, None]))
        for i, a in enumerate(target["seat"].values()):
            a.update(number=numbers[i], nickname=nicknames[i])
    return archive, repaired(target)


# -- building a state --------------------------------------------------------------------------


def status(using: str, table: str) -> Status:
    return Status.objects.using(using).filter(table=table).first()


def restamp(model, pk, stamp: int, using: str) -> None:
    model.objects.using(using).filter(pk=pk).update(created_at=STAMPS[0], updated_at=STAMPS[stamp])


def build(world: dict, using: str) -> None:
    """Write ``world`` into emptied tables (ids as they come: they differ from state to state)."""
    users = {u.sysmail: u for u in User.objects.using(using).filter(sysmail__in=USERS)}
    tags = {}
    for key, a in world["tag"].items():
        tags[key] = Tag.objects.using(using).create(name=key, description=a["description"])
        restamp(Tag, tags[key].pk, a["stamp"], using)
    projects = {}
    for key, a in world["project"].items():
        projects[key] = Project.objects.using(using).create(
            domaincode=key,
            name=a["name"],
            owner=users[a["owner"]],
            status=status(using, "projects"),
        )
    for key, a in world["project"].items():
        Project.objects.using(using).filter(pk=projects[key].pk).update(
            regio=projects[a["regio"]] if a["regio"] else None
        )
        restamp(Project, projects[key].pk, a["stamp"], using)
    locations = {}
    for key, a in world["location"].items():
        locations[key] = Location.objects.using(using).create(
            xmlid=key,
            project=projects[a["project"]],
            name=a["name"],
            status=status(using, "locations"),
        )
        restamp(Location, locations[key].pk, a["stamp"], using)
    instructors = {}
    for key, a in world["instructor"].items():
        instructors[key] = Instructor.objects.using(using).create(
            xmlid=key, name=a["name"], status=status(using, "instructors")
        )
        restamp(Instructor, instructors[key].pk, a["stamp"], using)
    events = {}
    for key, a in world["event"].items():
        events[key] = Event.objects.using(using).create(
            xmlid=key,
            project=projects[a["project"]],
            location=locations[a["location"]] if a["location"] else None,
            public_instructor=instructors[a["instructor"]] if a["instructor"] else None,
            name=a["name"],
            status=status(using, "events"),
        )
        events[key].tags.set([tags[t] for t in a["tags"]])
        restamp(Event, events[key].pk, a["stamp"], using)
    for (event_key, instructor_key), a in world["eventinstructor"].items():
        link = EventInstructor.objects.using(using).create(
            event=events[event_key],
            instructor=instructors[instructor_key],
            added_at=STAMPS[a["added"]],
        )
        restamp(EventInstructor, link.pk, a["stamp"], using)
    for key, a in world["post"].items():
        post = Post.objects.using(using).create(
            xmlid=key,
            project=projects[a["project"]],
            event=events[a["event"]] if a["event"] else None,
            name=a["name"],
            status=status(using, "posts"),
        )
        post.tags.set([tags[t] for t in a["tags"]])
        restamp(Post, post.pk, a["stamp"], using)
    for key, a in world["participant"].items():
        participant = Participant.objects.using(using).create(
            xmlid=key,
            event=events[a["event"]],
            name=a["name"],
            age=a["age"],
            status=status(using, "participants"),
        )
        restamp(Participant, participant.pk, a["stamp"], using)
    for key, a in world["seat"].items():
        Seat.objects.using(using).create(code=key, number=a["number"], nickname=a["nickname"])
    nodes = {key: Node.objects.using(using).create(name=key) for key in world["node"]}
    for key, a in world["node"].items():
        nodes[key].links.set([nodes[n] for n in a["links"]])
    articles = {
        key: Article.objects.using(using).create(slug=key, title=a["title"], hidden=a["hidden"])
        for key, a in world["article"].items()
    }
    for key, a in world["note"].items():
        Note.objects.using(using).create(xmlid=key, target=articles[a["article"]], text=a["text"])
    targets = {"article": articles, "tag": tags}
    for kind, key, name in world["label"]:
        Label.objects.using(using).create(target=targets[kind][key], name=name)


def empty(using: str) -> None:
    for model in reversed(MODELS):
        model._base_manager.using(using).all().delete()


# -- reading results ---------------------------------------------------------------------------


def flat(value: Any) -> tuple:
    if isinstance(value, list | tuple):
        return tuple(part for item in value for part in flat(item))
    return (value,)


def records_by_key(archive: Path) -> dict[str, dict[tuple, dict]]:
    """Label → flattened sync key → record, of an archive."""
    index, records = read_records(archive)
    result = {}
    for table in index["tables"]:
        fields = table["key_fields"]
        result[table["model"]] = {
            flat([record[name] for name in fields]): record for record in records[table["model"]]
        }
    return result


def current(
    workdir: Path, name: str, tables: list[str], using: str
) -> dict[str, dict[tuple, dict]]:
    archive = export(tables=tables, using=using, output_dir=workdir / name, compression="none")
    return records_by_key(archive.path)


def outcome(archive: Path, **options) -> tuple | str:
    """What an import reports: counts, cascades, total and plan entries; or its refusal."""
    try:
        result, run = run_import(archive, collect_changes=True, **options)
    except ImportFailed as exc:
        return str(exc)
    entries = sorted(
        (e["table"], orjson.dumps(e["key"]), e["action"], orjson.dumps(e["fields"]))
        for e in plan_entries(run)
    )
    return result.counts(), dict(result.cascaded), result.total_changes, entries


@contextlib.contextmanager
def rolled_back(using: str):
    """Run the body in a savepoint that is always rolled back."""
    with transaction.atomic(using=using):
        yield
        transaction.set_rollback(True, using=using)


@contextlib.contextmanager
def chunk_of(size: int):
    saved = sync.importer.CHUNK
    sync.importer.CHUNK = size
    try:
        yield
    finally:
        sync.importer.CHUNK = saved


# -- the property ------------------------------------------------------------------------------


def check_import(
    archive_world: dict,
    target_world: dict,
    mode: str,
    tables: list[str] | None,
    drops: list[tuple[str, int]],
    using: str = "default",
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build(archive_world, using)
        archive = export(
            tables=LABELS, using=using, output_dir=workdir / "archive", compression="none"
        ).path
        if drops:
            archive = rewrite_archive(
                archive,
                workdir / "edited.tar.gz",
                lambda label, rows: [r for i, r in enumerate(rows) if (label, i) not in drops],
            )
        wanted = records_by_key(archive)
        empty(using)
        build(target_world, using)
        chosen = tables or LABELS
        options = {"mode": mode, "tables": tables, "using": using}
        before = fingerprint(using)
        held = current(workdir, "before", LABELS, using)

        # (a) the dry run predicts the real run, and changes nothing
        preview = outcome(archive, dry_run=True, **options)
        assert fingerprint(using) == before, "the dry run changed the database"
        applied = outcome(archive, **options)
        assert preview == applied

        event(f"{mode}: {'refused' if isinstance(applied, str) else 'applied'}")
        if isinstance(applied, str):
            assert "\n" not in applied
            assert fingerprint(using) == before, f"a refused import changed the database: {applied}"
            # A consistent archive of every table leaves replace nothing to refuse.
            assert not (mode == "replace" and tables is None and not drops), applied
            return

        # Replace mode's deletions may leave a generic reference of a table it does not load
        # naming no row (Django's generic relations have no on_delete; see the report): the
        # tables it loads are compared, and update and append delete nothing.
        after = current(workdir, "after", chosen if mode == "replace" else LABELS, using)
        counts, cascaded, _, entries = applied
        if mode == "replace":
            # (b) the imported tables are the archive
            for label in chosen:
                assert after[label] == wanted[label], label
        else:
            # (c) nothing deleted; only what the report calls inserted or updated changed
            assert not cascaded
            assert all(c["deleted"] == 0 for c in counts.values()), counts
            written = {
                (table, flat(orjson.loads(key)))
                for table, key, action, _ in entries
                if action in ("insert", "update")
            }
            for label in LABELS:
                assert after[label].keys() >= held[label].keys(), f"{label}: rows lost"
                for key, record in after[label].items():
                    if (label, key) in written:
                        assert record == wanted[label][key], (label, key)
                    else:
                        assert record == held[label].get(key), (label, key, "changed, unreported")
                    if label in chosen and key in wanted[label]:
                        expected = kept_or_written(mode, held[label].get(key), wanted[label][key])
                        assert record == expected, (label, key, "not what the mode promises")

        # (d) the same import again changes nothing
        once = fingerprint(using)
        again = outcome(archive, **options)
        assert not isinstance(again, str), again
        assert again[2] == 0, again
        assert fingerprint(using) == once


# A wider search: SYNC_PROPERTY_EXAMPLES=500 (random examples instead of the fixed ones).
SEARCH = int(os.environ.get("SYNC_PROPERTY_EXAMPLES", "0"))


def kept_or_written(mode: str, held: dict | None, archived: dict) -> dict:
    """The record update or append mode leaves for a key the archive holds: a new one
    inserted; in update mode, one overwritten when the archive's ``updated_at`` is newer (a
    table without it: always, when its content differs)."""
    if held is None:
        return archived
    if mode == "append":
        return held
    if "updated_at" not in archived:
        return archived
    newer = datetime.fromisoformat(archived["updated_at"]) > datetime.fromisoformat(
        held["updated_at"]
    )
    return archived if newer else held


PROPERTY_SETTINGS = settings(
    max_examples=SEARCH or 20,
    deadline=None,
    database=None,  # nothing written into the repository
    derandomize=not SEARCH,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def make_base(using: str) -> None:
    """What the drawn rows refer to and no import loads: a status per table, the users."""
    for table in ["projects", "locations", "instructors", "events", "posts", "participants"]:
        Status.objects.using(using).create(value=1, name="active", table=table)
    for sysmail in USERS:
        User.objects.using(using).create(sysmail=sysmail)


@pytest.fixture
def base(db):
    make_base("default")


@pytest.fixture
def maria_base():
    make_base("maria")


PROPERTY = dict(
    worlds_=archive_and_target(),
    mode=st.sampled_from(["replace", "update", "append"]),
    tables=SUBSETS,
    drops=DROPS,
    key_map_limit=st.sampled_from([100_000, 0]),
    chunk=st.sampled_from([2000, 1]),
)


@PROPERTY_SETTINGS
@given(**PROPERTY)
def test_every_mode_keeps_its_promise(base, worlds_, mode, tables, drops, key_map_limit, chunk):
    archive_world, target_world = worlds_
    with (
        rolled_back("default"),
        override_settings(SYNC_KEY_MAP_LIMIT=key_map_limit),
        chunk_of(chunk),
    ):
        check_import(archive_world, target_world, mode, tables, drops)


@pytest.mark.crossdb
@pytest.mark.django_db(databases=["default", "maria"], transaction=True)
@settings(PROPERTY_SETTINGS, max_examples=SEARCH or 5)
@given(**PROPERTY)
def test_every_mode_keeps_its_promise_on_mariadb(
    maria_base, worlds_, mode, tables, drops, key_map_limit, chunk
):
    archive_world, target_world = worlds_
    with (
        rolled_back("maria"),
        override_settings(SYNC_KEY_MAP_LIMIT=key_map_limit),
        chunk_of(chunk),
    ):
        check_import(archive_world, target_world, mode, tables, drops, using="maria")


# -- what the search found ---------------------------------------------------------------------


def node_archive(tmp_path, links: dict[str, list[str]]) -> Path:
    """An archive of exactly these nodes (created in this order), the table emptied again."""
    nodes = {name: Node.objects.create(name=name) for name in links}
    for name, targets in links.items():
        nodes[name].links.set([nodes[t] for t in targets])
    archive = export(tables=["awkward.Node"], output_dir=tmp_path / "nodes", compression="none")
    Node.objects.all().delete()
    return archive.path


def node_links() -> dict[str, list[str]]:
    return {
        node.name: sorted(node.links.values_list("name", flat=True)) for node in Node.objects.all()
    }


@pytest.mark.parametrize(
    ("mode", "chunk", "key_map_limit"),
    [
        ("replace", 1, 100_000),
        ("update", 1, 100_000),
        ("append", 1, 100_000),
        ("replace", 1, 0),
        ("replace", 2000, 100_000),
    ],
    ids=["replace", "update", "append", "replace-bounded-index", "replace-one-chunk"],
)
def test_a_link_to_a_row_of_its_own_table_in_a_later_chunk(
    db, tmp_path, settings, mode, chunk, key_map_limit
):
    """Found by the property test: an M2M to its own table naming a row the archive adds in a
    later chunk (any table of more than 2,000 rows) was refused as "neither in the archive nor
    in the target database"."""
    settings.SYNC_KEY_MAP_LIMIT = key_map_limit
    links = {"n0": ["n0", "n1", "n2"], "n1": ["n2"], "n2": []}
    archive = node_archive(tmp_path, links)
    Node.objects.create(name="n2")
    with chunk_of(chunk):
        preview = outcome(archive, mode=mode, dry_run=True)
        applied = outcome(archive, mode=mode)
    assert preview == applied
    assert node_links() == links
    assert applied[0]["awkward.Node"]["new"] == 2


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_link_to_a_row_its_table_never_holds_is_refused_once_the_table_has_loaded(
    db, tmp_path, dry_run
):
    archive = node_archive(tmp_path, {"n0": ["n1"], "n1": []})
    edited = rewrite_archive(
        archive,
        tmp_path / "edited.tar.gz",
        lambda label, rows: [r for r in rows if r["name"] != "n1"],
    )
    Node.objects.create(name="kept")
    before = fingerprint()
    with chunk_of(1):
        refusal = outcome(edited, dry_run=dry_run)
    assert refusal == (
        "awkward.Node 'n0': field 'links' refers to awkward.Node 'n1', which is neither in "
        "the archive nor in the target database"
    )
    assert fingerprint() == before
