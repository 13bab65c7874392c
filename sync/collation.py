"""Texts that a database takes for one value although they differ: MariaDB's collations.

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
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson
from django.db import connections, models

from sync.fieldtypes import TEXT_FIELDS

FOLD_CHUNK = 2000
_NAME = re.compile(r"[A-Za-z0-9_]+")  # a charset's or collation's name, safe in SQL


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
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            [opts.db_table],
        )
        rows = [row for row in cursor.fetchall() if row[0] in fields and row[2]]
        found = {}
        for column, charset, name in rows:
            if not (_NAME.fullmatch(name) and _NAME.fullmatch(charset or "")):
                continue  # not names as MariaDB gives them (never seen): compared exactly
            # Whether the collation pads: the database says.
            cursor.execute(
                f"SELECT CONVERT('a' USING {charset}) COLLATE {name} = "
                f"CONVERT('a ' USING {charset}) COLLATE {name}"
            )
            pads = bool(cursor.fetchone()[0])
            if name.endswith("_bin") and not pads:
                continue  # compares exactly
            found[fields[column]] = Collation(using, name, charset, pads)
    return found
