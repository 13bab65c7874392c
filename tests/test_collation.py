"""Texts that differ, yet are one value to MariaDB's collation (``Ab``/``ab``, ``é``/``e``, two
emoji under ``utf8mb4_general_ci``; ``a``/``a `` under every PAD SPACE collation): distinct on
PostgreSQL and SQLite, they cannot both be a key of one MariaDB table. The import refuses such
a pair in a dry run as in a real one, in every mode, naming both keys — where MariaDB's own
refusal came only on writing, after the dry run had said all was well.

``content_tag.name`` is given MariaDB's default collation for these tests (the test database
is ``utf8mb4_bin``); see sync/collation.py. The same for unique values besides the key, and for
texts that a column's character set (``utf8mb3``, ``latin1``) cannot hold, which MariaDB
without a strict ``sql_mode`` stored as ``?``.
"""

from __future__ import annotations

import pytest
from django.db import connections

from crearis.content.models import Tag
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from tests.awkward.models import Seat
from tests.cli import assert_refused

pytestmark = [
    pytest.mark.crossdb,
    pytest.mark.django_db(databases=["default", "maria"], transaction=True),
]

MODES = ["replace", "update", "append"]


def runs(mode: str) -> list[tuple[str, bool]]:
    """(mode, dry run) to try: a dry run and a real one (the check does not depend on the
    mode: the cases take turns with the modes)."""
    return [(mode, True), (mode, False)]


@pytest.fixture
def general_ci():
    """``content_tag.name`` on MariaDB in the server's default collation, for one test."""
    column = "ALTER TABLE content_tag MODIFY name VARCHAR(100) NOT NULL COLLATE {}"
    with connections["maria"].cursor() as cursor:
        cursor.execute(column.format("utf8mb4_general_ci"))
    yield
    with connections["maria"].cursor() as cursor:
        cursor.execute(column.format("utf8mb4_bin"))


def tags_archive(names: list[str], output_dir) -> str:
    """An archive of tags with these names, from SQLite (which compares them exactly)."""
    Tag.objects.bulk_create(Tag(name=name) for name in names)
    return str(export(tables=["content.Tag"], output_dir=output_dir).path)


# (first, second, the mode to import in)
PAIRS = [
    ("ab", "Ab", "replace"),
    ("e", "é", "update"),
    ("a ", "a", "append"),
    ("😀", "😁", "update"),
]
PAIR_IDS = ["case", "accent", "trailing-space", "emoji"]


@pytest.mark.parametrize(("first", "second", "mode_"), PAIRS, ids=PAIR_IDS)
def test_two_keys_one_to_the_collation_are_refused(general_ci, tmp_path, first, second, mode_):
    # given: an archive holding both texts as keys
    archive = tags_archive([first, second], tmp_path)

    # when / then: refused in each mode, dry run and real run alike, naming both keys
    for mode, dry_run in runs(mode_):
        assert_refused(
            archive,
            expected=f"content.Tag {second!r}: appears twice in the archive for this "
            f"database: it is the same key as {first!r} under the collation of its "
            f"field 'name' utf8mb4_general_ci",
            using="maria",
            database="maria",
            mode=mode,
            dry_run=dry_run,
            no_input=True,
        )


@pytest.mark.parametrize(
    ("held", "given", "mode_", "limit"),
    [(*PAIRS[0], 100_000), (*PAIRS[2], 100_000), ("ab", "Ab", "update", 1)],
    ids=["case", "trailing-space", "case-chunk-by-chunk"],  # the last: keys looked up per chunk
)
def test_a_key_one_with_a_target_key_is_refused(
    general_ci, tmp_path, settings, held, given, mode_, limit
):
    # given: the target holds one text, the archive the other (not the first)
    settings.SYNC_KEY_MAP_LIMIT = limit
    archive = tags_archive([given, "other"], tmp_path)
    Tag.objects.using("maria").create(name=held, description="the target's")

    # when / then: refused, not written over the target's row nor refused by the database
    for mode, dry_run in runs(mode_):
        assert_refused(
            archive,
            expected=f"content.Tag {given!r}: is the same key as the target's {held!r} "
            f"under the collation of its field 'name' utf8mb4_general_ci",
            using="maria",
            database="maria",
            mode=mode,
            dry_run=dry_run,
            no_input=True,
        )


def test_keys_the_collation_tells_apart_are_imported(general_ci, tmp_path):
    # given: texts utf8mb4_general_ci compares as different (it does not expand ß)
    archive = tags_archive(["straße", "strasse", "ab"], tmp_path)
    Tag.objects.using("maria").create(name="ab")

    run_import(archive, using="maria")

    assert sorted(Tag.objects.using("maria").values_list("name", flat=True)) == [
        "ab",
        "strasse",
        "straße",
    ]


@pytest.mark.parametrize(
    ("target", "archive", "mode_", "expected"),
    [
        (
            [],
            [("s1", 1, "x"), ("s2", 2, "x ")],
            "append",
            "awkward.Seat 's2': field 'nickname' value 'x ' is given to awkward.Seat 's1' too, "
            "as 'x': the collation of its field 'nickname' utf8mb4_bin takes them for one value",
        ),
        (
            [("s0", 9, "x ")],
            [("s0", 9, "x "), ("s1", 1, "x")],
            "update",
            "awkward.Seat 's1': field 'nickname' value 'x' is held by awkward.Seat 's0' as "
            "'x ': the collation of its field 'nickname' utf8mb4_bin takes them for one value",
        ),
        (
            [("s0", 9, "x ")],
            [("s1", 1, "x")],
            "replace",
            "awkward.Seat 's1': field 'nickname' value 'x' is held by awkward.Seat 's0' as "
            "'x ': the collation of its field 'nickname' utf8mb4_bin takes them for one value",
        ),
    ],
    # the last: even where replace mode would delete the holder (such a value is not moved)
    ids=["in-the-archive", "held-by-a-target-row", "held-by-a-row-replace-deletes"],
)
def test_unique_values_one_to_the_collation_are_refused(tmp_path, target, archive, mode_, expected):
    # given: seats whose unique nicknames differ by a trailing space, which utf8mb4_bin
    # (the test database's collation) does not count
    Seat.objects.bulk_create(Seat(code=c, number=n, nickname=nick) for c, n, nick in archive)
    exported = str(export(tables=["awkward.Seat"], output_dir=tmp_path).path)
    Seat.objects.using("maria").bulk_create(
        Seat(code=c, number=n, nickname=nick) for c, n, nick in target
    )

    # when / then: refused, naming both records, in a dry run as in a real one
    for mode, dry_run in runs(mode_):
        assert_refused(
            exported,
            expected=expected,
            using="maria",
            database="maria",
            mode=mode,
            dry_run=dry_run,
            no_input=True,
        )


@pytest.fixture
def lax_description():
    """``content_tag.description`` on MariaDB in another character set (the parameter), and the
    session without a strict ``sql_mode``: where MariaDB stores ``?`` for a character it cannot
    hold, and says nothing."""

    def change(charset: str) -> None:
        with connections["maria"].cursor() as cursor:
            cursor.execute(
                f"ALTER TABLE content_tag MODIFY description LONGTEXT CHARACTER SET {charset} "
                "NOT NULL"
            )
            cursor.execute("SET SESSION sql_mode = ''")

    yield change
    with connections["maria"].cursor() as cursor:
        cursor.execute(
            "ALTER TABLE content_tag MODIFY description LONGTEXT CHARACTER SET utf8mb4 "
            "COLLATE utf8mb4_bin NOT NULL"
        )
        cursor.execute("SET SESSION sql_mode = DEFAULT")


@pytest.mark.parametrize(
    ("charset", "text", "refused"),
    [("utf8mb3", "ü € ሴ 😀", "😀' (U+1F600)"), ("latin1", "ü € \x81 ሴ 😀", "ሴ' (U+1234)")],
)
def test_text_its_column_cannot_hold_is_refused(tmp_path, lax_description, charset, text, refused):
    # given: a text with a character the column's character set lacks
    Tag.objects.create(name="t", description=text)
    archive = str(export(tables=["content.Tag"], output_dir=tmp_path).path)
    lax_description(charset)

    # when / then: refused naming it, not stored with "?" in its place
    for mode, dry_run in [("replace", True), ("update", False)]:
        assert_refused(
            archive,
            expected=f"content.Tag 't': field 'description': bad value {text!r} (holds '{refused}"
            f", which its column's character set {charset} cannot store)",
            using="maria",
            database="maria",
            mode=mode,
            dry_run=dry_run,
            no_input=True,
        )

    # and what the column holds imports exactly, in a lax session too
    Tag.objects.update(description=text[:5])
    run_import(export(tables=["content.Tag"], output_dir=tmp_path / "ok").path, using="maria")
    assert Tag.objects.using("maria").get(name="t").description == text[:5]


def test_a_lax_session_is_strict_while_an_import_writes(tmp_path, lax_description):
    # given: a character set the engine has no test for (no Python codec): the database must
    # refuse what it cannot hold, not store "?"
    Tag.objects.create(name="t", description="ü")
    archive = str(export(tables=["content.Tag"], output_dir=tmp_path).path)
    lax_description("geostd8")

    assert_refused(
        archive,
        expected="Incorrect string value",
        using="maria",
        database="maria",
        no_input=True,
    )
    with connections["maria"].cursor() as cursor:  # and the session is as it was
        cursor.execute("SELECT @@SESSION.sql_mode")
        assert cursor.fetchone()[0] == ""
