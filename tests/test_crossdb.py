"""Cross-database round trips: an archive written by one kind of database loads into another
and back, and every value survives (PostgreSQL, SQLite and MariaDB side by side).

The canonical dump of a database is the archive it exports, read back record by record: rows
keyed by sync key, references as the target's sync key, datetimes as UTC instants. A few values
are also checked directly through the ORM, so a fault shared by export and import cannot hide.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType

from crearis.content.models import (
    Event,
    EventInstructor,
    Image,
    Instructor,
    Location,
    Participant,
    Post,
    Project,
    Status,
    SystemConfig,
    Tag,
    User,
)
from sync.archive import ArchiveReader
from sync.importer import ImportFailed, import_records
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from sync.models import ImportRun
from sync.records import line_loader
from sync.sources import ArchiveSource
from tests.conftest import run_command

pytestmark = pytest.mark.crossdb
crossdb = pytest.mark.django_db(databases=["default", "pg", "maria"], transaction=True)

BERLIN = ZoneInfo("Europe/Berlin")
BEGIN = datetime(2026, 3, 29, 1, 30, 5, 123456, tzinfo=BERLIN)  # the night clocks go forward
END = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
# 02:30 happens twice in Berlin that night; fold=1 is the second one, in winter time.
ADDED = datetime(2026, 10, 25, 2, 30, 0, 1, tzinfo=BERLIN, fold=1)
EDITED = datetime(2025, 7, 1, 23, 59, 59, 500000, tzinfo=ZoneInfo("America/St_Johns"))

FAMILY = "👩\u200d👩\u200d👧\u200d👦"
RTL = "مرحبا بالعالم — שלום עולם"
CJK = "東京の演劇ワークショップ・한국어·中文"
COMBINING = "Cafe\u0301 Zalgo: Z\u0351\u0300a\u0307l\u0301g\u0308o"
LONG_TEXT = "".join(f"{i:06d} {FAMILY} {RTL} {CJK} {COMBINING}\n" for i in range(3000))
NESTED_JSON = {
    "nested": {"list": [1, 2.5, -0.1, None, True, False, "ünï", {"deep": [[], {}]}]},
    "empty_object": {},
    "empty_list": [],
    "pi": 3.141592653589793,
    "small": 1.5e-07,
    "sum": 0.1 + 0.2,
    "huge": 1e20,  # PostgreSQL's jsonb gives it back as the integer 100000000000000000000
    "beyond_64_bits": [2**64 + 1, -(2**63) - 1],
    "null": None,
    "emoji": FAMILY,
    "rtl": RTL,
    "ключ": CJK,
}


# -- builders ----------------------------------------------------------------------------------


def build_awkward_rows(using: str) -> None:
    """Rows holding the values databases disagree about: Unicode, JSON, decimals, instants."""
    status = {
        table: Status.objects.using(using).get(
            table=table, name="publish" if table == "events" else "new"
        )
        for table in ("events", "images", "instructors", "locations", "participants", "posts")
    }
    tags = [
        Tag.objects.using(using).create(name="Café", name_i18n={"ar": "مقهى", "ja": "カフェ"}),
        Tag.objects.using(using).create(name="Cafe\u0301"),  # differs from "Café" by bytes only
        Tag.objects.using(using).create(name=f"🎭 {FAMILY}", desc_i18n={}),
    ]
    SystemConfig.objects.using(using).create(key="xdb.nested", value=NESTED_JSON)
    SystemConfig.objects.using(using).create(key="xdb.empty", value={})
    SystemConfig.objects.using(using).create(key="xdb.list", value=[0.1, "", None, []])
    SystemConfig.objects.using(using).create(key="xdb.scalar", value=f"text {RTL}")
    owner = User.objects.db_manager(using).create_user(
        "ľubomír.öztürk@example.cz", username=RTL, is_staff=True, is_active=False
    )
    project = Project.objects.using(using).create(
        domaincode="xdb-tokyo",
        name=f"東京 {FAMILY}",
        description=LONG_TEXT,
        owner=owner,
        type=Project.Type.REGIO,
        status=Status.objects.using(using).get(table="projects", name="new"),
    )
    image = Image.objects.using(using).create(
        xmlid="xdb-tokyo.image__poster",
        status=status["images"],
        project=project,
        name=CJK,
        url="https://example.org/%E6%9D%B1%E4%BA%AC.png",
    )
    instructor = Instructor.objects.using(using).create(
        xmlid="xdb-tokyo.instructor__rtl",
        status=status["instructors"],
        name=RTL,
        description=COMBINING,
        image=image,
        is_public=False,
    )
    location = Location.objects.using(using).create(
        xmlid="xdb-tokyo.location__shibuya",
        status=status["locations"],
        project=project,
        name=CJK,
        city="東京",
        country="JP",
        latitude=Decimal("12.345678"),
        longitude=Decimal("-0.000001"),
    )
    event = Event.objects.using(using).create(
        xmlid="xdb-tokyo.event__dst",
        status=status["events"],
        project=project,
        location=location,
        public_instructor=instructor,
        name=f"{FAMILY} {CJK}"[:200],
        teaser=COMBINING,
        description=LONG_TEXT,
        date_begin=BEGIN,
        date_end=END,
        price=Decimal("0.10"),
        is_online=True,
    )
    event.tags.set(tags)
    Event.objects.using(using).filter(pk=event.pk).update(updated_at=EDITED)
    Event.objects.using(using).create(
        xmlid="xdb-tokyo.event__nulls",
        status=status["events"],
        project=project,
        name="",
        description="",
    )
    EventInstructor.objects.using(using).create(event=event, instructor=instructor, added_at=ADDED)
    Post.objects.using(using).create(
        xmlid="xdb-tokyo.post__long",
        status=status["posts"],
        project=project,
        event=event,
        name=RTL,
        content=LONG_TEXT,
    )
    Participant.objects.using(using).create(
        xmlid="xdb-tokyo.participant__json",
        status=status["participants"],
        event=event,
        name=COMBINING,
        meta={"allergies": ["🥜", "gluten"], "note": None, "score": 0.1, "deep": NESTED_JSON},
    )
    Participant.objects.using(using).create(
        xmlid="xdb-tokyo.participant__empty",
        status=status["participants"],
        event=event,
        name="",
        age=0,
        meta=[],
    )


def delete_everything(using: str) -> None:
    """Leave no content row at all, system data and staff included: a fresh database."""
    User.objects.using(using).update(instructor=None)
    Project.objects.using(using).update(regio=None)
    for model in (Participant, Post, EventInstructor, Event, Location, Instructor, Image,
                  Project, User, Status, Tag, SystemConfig):  # fmt: skip
        model._default_manager.using(using).all().delete()


def add_permissions_in_order(using: str, codenames: list[str]) -> None:
    """Custom permissions created in a different order per database, so their ids differ."""
    content_type = ContentType.objects.db_manager(using).get_for_model(Event)
    for codename in codenames:
        Permission.objects.using(using).create(
            content_type=content_type, codename=codename, name=f"Can {codename.replace('_', ' ')}"
        )


def edit_rows(using: str) -> None:
    """Local edits an import must undo: changed values, a lost tag, a stray and a lost row."""
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    Event.objects.using(using).filter(xmlid="xdb-tokyo.event__dst").update(
        price=Decimal("99.99"),
        date_begin=datetime(2026, 3, 29, 3, 30, 5, 0, tzinfo=BERLIN),
        description="short",
        is_online=False,
        location=None,
        updated_at=long_ago,
    )
    Event.objects.using(using).get(xmlid="xdb-tokyo.event__dst").tags.remove(
        Tag.objects.using(using).get(name="Café")
    )
    Location.objects.using(using).filter(xmlid="xdb-tokyo.location__shibuya").update(
        latitude=Decimal("12.345679"), updated_at=long_ago
    )
    Participant.objects.using(using).filter(xmlid="xdb-tokyo.participant__json").update(
        meta={"changed": 1.0}, updated_at=long_ago
    )
    SystemConfig.objects.using(using).filter(key="xdb.nested").update(
        value={**NESTED_JSON, "pi": 3.14}, updated_at=long_ago
    )
    User.objects.using(using).filter(instructor__isnull=False).update(
        instructor=None, updated_at=long_ago
    )
    Project.objects.using(using).filter(regio__isnull=False).update(regio=None, updated_at=long_ago)
    Participant.objects.using(using).filter(xmlid="xdb-tokyo.participant__empty").delete()
    Tag.objects.using(using).create(name="stray")


# -- reading back ------------------------------------------------------------------------------


def canonical(path: Path) -> dict[str, list[dict]]:
    """Every table of an archive: records sorted by sync key, datetimes as UTC instants."""
    tables = {}
    with ArchiveReader(path) as reader:
        for entry, lines in reader.tables():
            datetimes = [n for n, t in entry.fields.items() if t == "DateTimeField"]
            records = []
            loads = line_loader([n for n, t in entry.fields.items() if t == "JSONField"])
            for line in lines:
                record = loads(line)
                for name in datetimes:
                    if record[name] is not None:
                        record[name] = datetime.fromisoformat(record[name]).astimezone(UTC)
                records.append(record)
            records.sort(key=lambda r, names=entry.key_fields: orjson.dumps([r[n] for n in names]))
            tables[entry.label] = records
    return tables


def assert_awkward_values_survived(using: str) -> None:
    event = Event.objects.using(using).get(xmlid="xdb-tokyo.event__dst")
    assert event.price == Decimal("0.10") and str(event.price) == "0.10"
    assert event.date_begin == BEGIN and event.date_begin.microsecond == 123456
    assert event.date_end == END
    assert event.updated_at == EDITED
    assert event.is_online is True and event.capacity is None
    assert event.description == LONG_TEXT and event.teaser == COMBINING
    assert sorted(event.tags.values_list("name", flat=True)) == sorted(
        ["Café", "Cafe\u0301", f"🎭 {FAMILY}"]
    )
    assert event.location.latitude == Decimal("12.345678")
    assert event.location.longitude == Decimal("-0.000001")
    assert event.public_instructor.is_public is False
    through = EventInstructor.objects.using(using).get(event=event)
    # Python never finds a time in a repeated hour equal to one in another zone: compare in UTC.
    assert through.added_at.astimezone(UTC) == ADDED.astimezone(UTC)
    assert ADDED.astimezone(UTC).hour == 1
    empty = Event.objects.using(using).get(xmlid="xdb-tokyo.event__nulls")
    assert (empty.price, empty.date_begin, empty.location_id) == (None, None, None)
    assert empty.description == ""
    configs = dict(SystemConfig.objects.using(using).values_list("key", "value"))
    assert configs["xdb.nested"] == NESTED_JSON
    assert configs["xdb.empty"] == {}
    assert configs["xdb.list"] == [0.1, "", None, []]
    assert configs["xdb.scalar"] == f"text {RTL}"
    meta = Participant.objects.using(using).get(xmlid="xdb-tokyo.participant__json").meta
    assert meta["deep"] == NESTED_JSON and meta["note"] is None
    assert Participant.objects.using(using).get(xmlid="xdb-tokyo.participant__empty").meta == []
    owner = User.objects.using(using).get(sysmail="ľubomír.öztürk@example.cz")
    assert (owner.username, owner.is_staff, owner.is_active) == (RTL, True, False)
    assert Project.objects.using(using).get(domaincode="xdb-tokyo").is_regio is True


def permission_sets(using: str) -> dict[str, set[tuple[str, str]]]:
    return {
        group.name: {
            (p.content_type.app_label, p.codename) for p in group.permissions.using(using).all()
        }
        for group in Group.objects.using(using).all()
    }


# -- the tests ---------------------------------------------------------------------------------


@crossdb
def test_archive_from_postgresql_round_trips_through_sqlite_and_mariadb(tmp_path):
    # given: PostgreSQL with system data, demo data and the awkward values
    run_command("syncseed", database="pg")
    run_command("syncdemo", events=10, database="pg")
    build_awkward_rows("pg")
    source = export(using="pg", output_dir=tmp_path / "pg", compression="zst")
    expected = canonical(source.path)
    assert sum(len(records) for records in expected.values()) == source.total
    assert len(expected["content.Event"]) == 12

    # when: PostgreSQL → SQLite → MariaDB → a PostgreSQL emptied of all content
    archive = source.path
    for alias in ("default", "maria", "pg"):
        if alias == "pg":
            delete_everything("pg")
            assert not any(m.objects.using("pg").exists() for m in (User, Status, Tag, Event))
        result, _ = run_import(archive, mode="replace", using=alias)
        assert sum(t.new for t in result.tables.values()) == source.total, alias

        # then: the values are there, a second import finds nothing to change, and the
        # database exports the very same records
        assert_awkward_values_survived(alias)
        for mode in ("replace", "update"):
            again = import_records(ArchiveSource(archive), mode=mode, using=alias, dry_run=True)
            assert again.total_changes == 0, (alias, mode, again.as_dict())
        archive = export(using=alias, output_dir=tmp_path / alias, compression="zst").path
        assert canonical(archive) == expected, alias


@crossdb
def test_groups_keep_their_permissions_where_permission_ids_differ(tmp_path):
    # given: custom permissions created in another order in each database, and groups on PG
    add_permissions_in_order("pg", ["publish_event", "archive_event"])
    add_permissions_in_order("maria", ["archive_event", "publish_event"])
    add_permissions_in_order("default", ["archive_event", "publish_event"])
    editors = Group.objects.using("pg").create(name="Redaktion ✍️")
    editors.permissions.set(
        Permission.objects.using("pg").filter(
            codename__in=["add_event", "change_event", "publish_event", "view_group"]
        )
    )
    checkers = Group.objects.using("pg").create(name="Kontrola kvality")
    checkers.permissions.set(
        Permission.objects.using("pg").filter(codename__in=["archive_event", "view_participant"])
    )
    Group.objects.using("pg").create(name="empty")
    expected = permission_sets("pg")

    def ids(using: str) -> dict[tuple, int]:
        rows = Permission.objects.using(using).values_list(
            "content_type__app_label", "content_type__model", "codename", "pk"
        )
        return {tuple(key): pk for *key, pk in rows}

    assert any(pk != ids("maria")[key] for key, pk in ids("pg").items())

    # when: PG → MariaDB → SQLite, auth.Group only
    archive = export(tables=["auth.Group"], using="pg", output_dir=tmp_path, compression="zst")
    records = canonical(archive.path)
    assert list(records) == ["auth.Group"]
    editors_record = next(r for r in records["auth.Group"] if r["name"] == "Redaktion ✍️")
    assert ["content", "event", "publish_event"] in editors_record["permissions"]
    run_import(archive.path, mode="replace", using="maria")
    again = export(tables=["auth.Group"], using="maria", output_dir=tmp_path, compression="zst")
    run_import(again.path, mode="replace", using="default")

    # then: every group has the same permissions, by codename, everywhere
    assert permission_sets("maria") == expected
    assert permission_sets("default") == expected
    assert canonical(again.path) == records


@crossdb
def test_users_groups_resolve_against_the_target_when_groups_are_not_in_the_archive(tmp_path):
    # given: groups on PG and, created in another order beside an extra one, on MariaDB
    for name in ("Team Praha", "Łódź crew 🚲"):
        Group.objects.using("pg").create(name=name)
    for name in ("other", "Łódź crew 🚲", "Team Praha"):
        Group.objects.using("maria").create(name=name)
    assert Group.objects.using("pg").get(name="Team Praha").pk != (
        Group.objects.using("maria").get(name="Team Praha").pk
    )
    user = User.objects.db_manager("pg").create_user("zoë@example.org")
    user.groups.set(Group.objects.using("pg").all())
    user.user_permissions.set(Permission.objects.using("pg").filter(codename="view_event"))
    archive = export(tables=["content.User"], using="pg", output_dir=tmp_path, compression="zst")

    # when: imported into MariaDB, which has the groups
    run_import(archive.path, mode="replace", using="maria")

    # then: the user belongs to the same groups, by name, and has the same permission
    imported = User.objects.using("maria").get(sysmail="zoë@example.org")
    assert set(imported.groups.values_list("name", flat=True)) == {"Team Praha", "Łódź crew 🚲"}
    assert list(imported.user_permissions.values_list("codename", flat=True)) == ["view_event"]

    # and: SQLite, which lacks a group, refuses the archive and stays untouched
    Group.objects.using("default").create(name="Team Praha")
    with pytest.raises(ImportFailed, match=r"auth\.Group.*Łódź crew 🚲"):
        run_import(archive.path, mode="replace", using="default")
    assert not User.objects.using("default").exists()


@crossdb
@pytest.mark.parametrize("mode", ["replace", "update"])
def test_an_import_overwrites_local_edits_on_every_engine(tmp_path, mode):
    # given: the PostgreSQL archive loaded into each database, then edited there
    run_command("syncseed", database="pg")
    run_command("syncdemo", events=10, database="pg")
    build_awkward_rows("pg")
    source = export(using="pg", output_dir=tmp_path / "pg", compression="zst")
    expected = canonical(source.path)
    for alias in ("default", "maria", "pg"):
        if alias != "pg":
            run_import(source.path, mode="replace", using=alias)
        edit_rows(alias)

        # when: the archive is imported again
        result, _ = run_import(source.path, mode=mode, using=alias)

        # then: each edit is found and undone (update mode: the archive's rows are newer),
        # compared in the engine's own types, and the database holds the archive again
        changes = {
            label: (t.new, t.updated, t.deleted)
            for label, t in result.tables.items()
            if label in ("content.Event", "content.Location", "content.Participant",
                         "content.SystemConfig", "content.Tag")
        }  # fmt: skip
        assert changes == {
            "content.Event": (0, 1, 0),
            "content.Location": (0, 1, 0),
            "content.Participant": (1, 1, 0),
            "content.SystemConfig": (0, 1, 0),
            "content.Tag": (0, 0, 1 if mode == "replace" else 0),
        }, alias
        assert_awkward_values_survived(alias)
        again = import_records(ArchiveSource(source.path), mode=mode, using=alias, dry_run=True)
        assert again.total_changes == 0, (alias, again.as_dict())
        dump = canonical(export(using=alias, output_dir=tmp_path / alias, compression="zst").path)
        if mode == "update":
            assert dump["content.Tag"] != expected["content.Tag"]  # the stray tag stays
            dump["content.Tag"] = [t for t in dump["content.Tag"] if t["name"] != "stray"]
        assert dump == expected, alias


@crossdb
def test_mariadb_refuses_a_second_import_while_its_lock_is_held(tmp_path):
    """The MariaDB equivalent of PostgreSQL's advisory lock: GET_LOCK, held here by a second
    connection as a running import in another process would."""
    import MySQLdb
    from django.db import connections

    from sync.locking import LOCK_NAME, _lock_id

    run_command("syncseed", database="maria")
    archive = export(tables=["content.Tag"], using="maria", output_dir=tmp_path).path
    params = connections["maria"].get_connection_params()
    other = MySQLdb.connect(**params)
    try:
        cursor = other.cursor()
        cursor.execute("SELECT GET_LOCK(%s, 0)", [f"{LOCK_NAME}-{_lock_id('maria')}"])
        assert cursor.fetchone()[0] == 1
        with pytest.raises(ImportFailed, match="Refused"):
            run_import(archive, using="maria")
        # released before the connection closes: the server frees a closed connection's locks
        # a moment later, and the next import came first once (a busy machine)
        cursor.execute("SELECT RELEASE_LOCK(%s)", [f"{LOCK_NAME}-{_lock_id('maria')}"])
    finally:
        other.close()
    result, _ = run_import(archive, using="maria")
    assert result.total_changes == 0


@crossdb
def test_the_database_option_imports_into_that_database(tmp_path):
    run_command("syncseed")
    archive = export(tables=["content.Status", "content.Tag"], output_dir=tmp_path).path
    before = Tag.objects.using("maria").count()

    run_command("syncimport", str(archive), database="maria", no_input=True, quiet=True)

    assert Tag.objects.using("maria").count() == Tag.objects.count() > before
    assert ImportRun.objects.using("maria").filter(archive=str(archive)).exists()
    assert not ImportRun.objects.using("default").exists()
