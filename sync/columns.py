"""Reading a queryset's rows fast: a chunk at a time, a column at a time.

Django's per-row machinery (``apply_converters``, model or dict building) costs more than the
database itself when a whole table is read. Export and import read whole tables, so both use
these helpers; the values they give are those the queryset itself would give.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

import orjson
from django.conf import settings
from django.db import models
from django.db.models.expressions import Col
from django.db.models.sql.constants import MULTI
from django.utils.dateparse import parse_datetime


def reads_datetimes_as_text(connection) -> bool:
    """Whether this connection's datetime text can be turned into archive text directly
    (``utc_datetime_texts``): SQLite, or PostgreSQL in ISO style, working in UTC."""
    if not (settings.USE_TZ and connection.timezone_name == "UTC"):
        return False
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW DateStyle")
            return cursor.fetchone()[0].startswith("ISO")
    return connection.vendor == "sqlite"


# How the databases print a UTC datetime that the archive can take as it is (after moving the
# pieces): SQLite holds what Django wrote, str() of the naive datetime (six digits of
# microseconds, none when zero); PostgreSQL's ISO style trims the fraction's trailing zeros.
_SQLITE_DATETIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.(?!000000)\d{6})?")
_POSTGRESQL_DATETIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{0,5}[1-9])?\+00")
# Zeros that pad a PostgreSQL fraction to six digits, by the length of the text.
_FRACTION_PADDING = {22: ""} | {
    len("2024-01-01 08:00:00.+00") + n: "0" * (6 - n) for n in range(1, 7)
}


# The shape of what utc_datetime_texts gives: texts of this shape sort in time order (the
# same digits in the same places; a missing fraction, ".000000", sorts before any other).
UTC_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?\+00:00")


def utc_datetime_texts(column: Sequence, connection) -> list:
    """Datetime texts as the archive writes datetimes (orjson's RFC 3339 for an aware datetime:
    ``2024-05-01T08:00:00.123456+00:00``, no fraction when it is zero). Text in any other shape
    is parsed as Django would parse it, so the record holds the same value either way."""
    if connection.vendor == "sqlite":
        fullmatch = _SQLITE_DATETIME.fullmatch
        convert = connection.ops.convert_datetimefield_value
        return [
            f"{value[:10]}T{value[11:]}+00:00"
            if value is not None and fullmatch(value)
            else value
            if value is None
            else convert(parse_datetime(value), None, connection)
            for value in column
        ]
    fullmatch = _POSTGRESQL_DATETIME.fullmatch
    padding = _FRACTION_PADDING
    zone = connection.timezone
    return [
        f"{value[:10]}T{value[11:-3]}{padding[len(value)]}+00:00"
        if value is not None and fullmatch(value)
        else value
        if value is None
        else datetime.fromisoformat(value).astimezone(zone)
        for value in column
    ]


# The PostgreSQL types whose text psycopg turns into Python values in ``postgresql_texts``:
# each holds values Python does not (dates BC or past 9999 and ±infinity, intervals beyond
# 999,999,999 days, the time 24:00:00).
POSTGRESQL_TEXT_TYPES = {"DateField": "date", "TimeField": "time", "DurationField": "interval"}


def postgresql_texts(internal_type: str, connection) -> Callable[[Sequence], list]:
    """A function turning a column of PostgreSQL's text of a field of ``internal_type`` (one of
    ``POSTGRESQL_TEXT_TYPES``) into the Python values psycopg itself would give, with its own
    loader; ValueError for a value Python cannot hold, which the caller names."""
    from psycopg import DataError
    from psycopg.pq import Format

    client = connection.connection
    oid = client.adapters.types[POSTGRESQL_TEXT_TYPES[internal_type]].oid
    load = client.adapters.get_loader(oid, Format.TEXT)(oid, client).load

    def values(column: Sequence) -> list:
        try:
            return [None if value is None else load(value.encode()) for value in column]
        except DataError as exc:
            raise ValueError(str(exc)) from exc

    return values


def read_columns(queryset: models.QuerySet, chunk_size: int) -> Iterator[list[list]]:
    """The rows of a ``values_list`` queryset, ``chunk_size`` at a time, as one list per column.

    The values are those the queryset itself would give: the same SQL (a server-side cursor on
    PostgreSQL, as ``.iterator()`` uses) and the same converters, applied a column at a time
    instead of a row at a time — which is most of the cost of reading a wide table in Django.
    """
    compiler = queryset.query.get_compiler(queryset.db)
    chunks = compiler.execute_sql(MULTI, chunked_fetch=True, chunk_size=chunk_size)
    fields = [s[0] for s in compiler.select[: compiler.col_count]]
    converters = [
        (position, column_converter(convs, expression, compiler.connection))
        for position, (convs, expression) in compiler.get_converters(fields).items()
    ]
    for rows in chunks:
        if not rows:
            continue
        columns = [list(column) for column in zip(*rows, strict=True)]
        for position, convert in converters:
            columns[position] = convert(columns[position])
        yield columns


def column_converter(convs: list, expression, connection) -> Callable[[list], list]:
    """Apply Django's converters ``convs`` to a whole column, with fast paths for the common
    costly cases that give exactly the same values."""

    def convert_value(value):
        for convert in convs:
            value = convert(value, expression, connection)
        return value

    field = expression.output_field
    if (
        connection.vendor == "sqlite"
        and settings.USE_TZ
        and len(convs) == 1
        and field.get_internal_type() == "DateTimeField"
    ):
        # The sqlite3 module already parsed the text into a naive datetime (Django registers a
        # converter for the column type); Django's converter then only attaches the zone.
        zone = connection.timezone

        def aware_datetimes(column: list) -> list:
            return [
                value.replace(tzinfo=zone)
                if value.__class__ is datetime and value.tzinfo is None
                else convert_value(value)
                for value in column
            ]

        return aware_datetimes
    if (
        isinstance(field, models.JSONField)
        and field.decoder is None
        and isinstance(expression, Col)
        and convs == [field.from_db_value]
    ):

        def json_values(column: list) -> list:
            return [fast_json(value, convert_value) for value in column]

        return json_values
    if len(convs) == 1:
        single = convs[0]
        return lambda column: [single(value, expression, connection) for value in column]
    return lambda column: [convert_value(value) for value in column]


_LONG_NUMBER = re.compile(r"\d{19}")


def fast_json(value, slow: Callable):
    """``JSONField.from_db_value`` with orjson: the same value, parsed several times faster.

    orjson turns integers beyond 64 bits into floats and rejects what ``json`` accepts beyond
    the standard (NaN, lone surrogates); such text goes the standard way.
    """
    if value.__class__ is not str or _LONG_NUMBER.search(value):
        return slow(value)
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return slow(value)
