"""MariaDB's text columns as they compare and store text: collations and character sets.

**Collations.** Texts that a database takes for one value although they differ.

PostgreSQL and SQLite compare the text of a unique column (a sync key, a unique field) exactly,
as the engine does. MariaDB compares it under the column's collation: its default,
``utf8mb4_general_ci``, takes ``Ab`` and ``ab``, ``é`` and ``e``, and any two emoji for one
value, and every ``PAD SPACE`` collation (``utf8mb4_bin`` included) ``a`` and ``a ``. Two such
values, distinct in the archive, cannot both be stored there: the database refuses the second
with its own message, after the dry run said all was well.

``Collation.fold`` maps texts to what the column compares: the database's own sort weights
(``WEIGHT_STRING``, one query per 2,000 texts), or for a binary collation the text itself,
without trailing spaces where the collation pads (no query). Folded values are equal exactly
when the column takes the texts for one value, so the engine can refuse such pairs in a dry
run as in a real one, naming both.

**Character sets.** A column in ``utf8mb3`` (MariaDB's ``utf8`` before 10.6) holds no
character beyond U+FFFF (emoji), one in ``latin1`` only Windows-1252: the database refuses
other text, or, without a strict ``sql_mode``, stores ``?`` in its place and says nothing.
``column_charsets`` gives, per text field, the test a value must pass to be stored as it is
(``sync.records`` refuses the others, naming the character); ``strict_session`` makes the
database refuse, rather than change, whatever a check may miss, while an import writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from django.db import DatabaseError, connections, models

from sync.fieldtypes import TEXT_FIELDS

FOLD_CHUNK = 2000
_NAME = re.compile(r"[A-Za-z0-9_]+")  # a charset's or collation's name, safe in SQL
_PADS: dict[tuple[str, str], bool] = {}  # (alias, collation) → whether it pads with spaces


class Collation:
    """How MariaDB compares the values of one text column."""

    def __init__(self, using: str, name: str, charset: str, pads: bool):
        self.using = using
        self.name = name
        self.charset = charset
        self.pads = pads  # PAD SPACE: trailing spaces do not count
        self.binary = name.endswith("_bin")

    def fold(self, texts: Iterable[str]) -> dict[str, Any]:
        """Text → the value the column compares (equal for texts it takes for one)."""
        texts = set(texts)
        if self.binary:
            return {text: text.rstrip(" ") if self.pads else text for text in texts}
        folded: dict[str, Any] = {}
        ordered = list(texts)
        sql = (
            f"SELECT t.i, WEIGHT_STRING(CONVERT(t.v USING {self.charset}) COLLATE "
            f"{self.name}) FROM JSON_TABLE(%s, '$[*]' COLUMNS (i FOR ORDINALITY, "
            "v LONGTEXT CHARACTER SET utf8mb4 PATH '$')) AS t"
        )
        with connections[self.using].cursor() as cursor:
            for start in range(0, len(ordered), FOLD_CHUNK):
                part = ordered[start : start + FOLD_CHUNK]
                stripped = [text.rstrip(" ") for text in part] if self.pads else part
                cursor.execute(sql, [orjson.dumps(stripped).decode()])
                for i, weight in cursor.fetchall():
                    folded[part[i - 1]] = bytes(weight)
        return folded


def fold_values(values: list[tuple], collated: dict[int, Collation]) -> list[tuple]:
    """Tuples of values (keys, unique values) as the database compares them: the text parts at
    the positions ``collated`` names folded by their column's collation."""
    folded = [list(value) for value in values]
    for position, collation in collated.items():
        folds = collation.fold(v[position] for v in values if type(v[position]) is str)
        for value in folded:
            if type(value[position]) is str:
                value[position] = folds[value[position]]
    return [tuple(value) for value in folded]


def fields_collated(named: Iterable[tuple[str, Collation]]) -> str:
    """Field names and their collations, for a message (``'name' utf8mb4_general_ci``)."""
    return ", ".join(f"{name!r} {collation.name}" for name, collation in named)


def _column_rows(connection, table: str) -> list[tuple]:
    """(column, character set, collation) of each column of ``table`` in this database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            [table],
        )
        return cursor.fetchall()


def column_collations(
    model: type[models.Model], names: Iterable[str], using: str
) -> dict[str, Collation]:
    """The collations of those of the fields ``names`` (text fields of ``model`` itself) whose
    MariaDB column takes texts that differ for one value; none on other databases."""
    connection = connections[using]
    if connection.vendor != "mysql":
        return {}
    opts = model._meta
    fields = {}
    for name in names:
        if not isinstance(name, str) or "__" in name:
            continue
        f = opts.pk if name == "pk" else opts.get_field(name)
        if f.concrete and not f.is_relation and f.get_internal_type() in TEXT_FIELDS:
            fields[f.column] = f.name
    if not fields:
        return {}
    rows = [row for row in _column_rows(connection, opts.db_table) if row[0] in fields and row[2]]
    with connection.cursor() as cursor:
        found = {}
        for column, charset, name in rows:
            if not (_NAME.fullmatch(name) and _NAME.fullmatch(charset or "")):
                continue  # not names as MariaDB gives them (never seen): compared exactly
            pads = _PADS.get((using, name))
            if pads is None:  # whether the collation pads: the database says
                cursor.execute(
                    f"SELECT CONVERT('a' USING {charset}) COLLATE {name} = "
                    f"CONVERT('a ' USING {charset}) COLLATE {name}"
                )
                pads = _PADS[using, name] = bool(cursor.fetchone()[0])
            if name.endswith("_bin") and not pads:
                continue  # compares exactly
            found[fields[column]] = Collation(using, name, charset, pads)
    return found


# Characters MariaDB's latin1 holds beyond Windows-1252 (its five unassigned bytes).
_LATIN1_EXTRA = frozenset("\x81\x8d\x8f\x90\x9d")


def _bmp_only(text: str) -> str | None:
    return next((c for c in text if ord(c) > 0xFFFF), None) if not text.isascii() else None


def _encodable(codec: str, extra: frozenset = frozenset()) -> Callable[[str], str | None]:
    def first_refused(text: str) -> str | None:
        if text.isascii():
            return None
        try:
            text.encode(codec)
        except UnicodeEncodeError:
            return next((c for c in text if c not in extra and not _encodes(c, codec)), None)
        return None

    return first_refused


def _encodes(character: str, codec: str) -> bool:
    try:
        character.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


# A character set → the first character of a text it cannot hold (None: it holds them all).
_ANY_TEXT = {"utf8mb4", "utf16", "utf16le", "utf32", "binary"}
_CHARSET_CHECKS: dict[str, Callable[[str], str | None]] = {
    "utf8mb3": _bmp_only,
    "utf8": _bmp_only,
    "ucs2": _bmp_only,
    "latin1": _encodable("cp1252", _LATIN1_EXTRA),
    "ascii": _encodable("ascii"),
}


def column_charsets(
    model: type[models.Model], using: str
) -> dict[str, tuple[str, Callable[[str], str | None]]]:
    """Field name → (character set, its test: the first character of a text it cannot hold)
    for the text columns of ``model`` on MariaDB whose character set does not hold every
    character; none on other databases. A character set without a Python codec is left to the
    database (in a strict session it refuses such text)."""
    connection = connections[using]
    if connection.vendor != "mysql":
        return {}
    opts = model._meta
    fields = {
        f.column: f.name
        for f in opts.concrete_fields
        if not f.is_relation and f.get_internal_type() in TEXT_FIELDS
    }
    found = {}
    for column, charset, _ in _column_rows(connection, opts.db_table):
        if column not in fields or not charset or charset in _ANY_TEXT:
            continue
        check = _CHARSET_CHECKS.get(charset)
        if check is None:
            try:
                "".encode(charset)
            except LookupError:
                continue
            check = _encodable(charset)
        found[fields[column]] = (charset, check)
    return found


@contextmanager
def strict_session(using: str) -> Iterator[None]:
    """MariaDB: a strict ``sql_mode`` for the session while the block runs, so the database
    refuses a value it would otherwise change (truncate, or store ``?`` for a character it
    cannot hold); the session's mode as it was afterwards. Nothing on other databases."""
    connection = connections[using]
    if connection.vendor != "mysql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@SESSION.sql_mode")
        before = cursor.fetchone()[0]
    if "STRICT_ALL_TABLES" in before.split(","):
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION sql_mode = %s", [before])
        except DatabaseError:
            pass  # the connection is gone, and its session with it
