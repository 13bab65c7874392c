"""Records: one row of one table as a database-neutral JSON object.

A record maps field names to values. Foreign keys hold the target's sync key (a scalar when the
key has one part, else a list), many-to-many fields a sorted list of such keys. Plain values are
JSON natives; datetimes are RFC 3339 with microseconds and offset; decimals are strings (exact);
binary is base64; durations are ISO 8601. Decoding goes back through each field's own
``to_python``, so any database gets exactly the value that was written.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.backends.base.operations import BaseDatabaseOperations
from django.utils.duration import duration_iso_string

from sync.errors import SyncError
from sync.fieldtypes import INTEGER_FIELDS, TEXT_FIELDS
from sync.generic import GenericPart
from sync.schema import SyncModel, key_paths
from sync.verify import JSON_MAX_DEPTH, nesting_depth

JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


class UnwritableValue(SyncError, ValueError):
    """A record value no archive line can hold as the import reads it back."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"field {field!r} {reason}", field=field)
        self.reason = reason


def dumps_line(record: dict) -> bytes:
    """A record as one JSON line; UnwritableValue if a value cannot be written exactly."""
    try:
        return orjson.dumps(record, default=_default, option=JSON_OPTIONS)
    except orjson.JSONEncodeError:
        exact = {name: _exact_value(name, value) for name, value in record.items()}
        return orjson.dumps(exact, default=_default, option=JSON_OPTIONS)


def _exact_value(name: str, value: Any) -> Any:
    """``value`` as it is if orjson writes it, else as JSON text the standard library writes.

    orjson writes integers of at most 64 bits (a JSON column may hold bigger ones, and
    PostgreSQL's jsonb hands back a float such as 1e20 as one) and nests at most 254 levels
    (a JSON column may nest deeper). The standard library writes both exactly, slower; only
    the values orjson refuses take that way.
    """
    try:
        orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        pass
    else:
        return value
    depth = nesting_depth(value)
    if depth > JSON_MAX_DEPTH:
        raise UnwritableValue(name, f"is nested {depth} levels deep, over {JSON_MAX_DEPTH}")
    try:
        text = json.dumps(
            value, default=_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        return orjson.Fragment(text.encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise UnwritableValue(name, f"cannot be written as JSON ({exc})") from exc


def line_loader(json_fields: list[str]) -> Callable[[bytes], Any]:
    """A parser for a table's JSON lines that keeps integers beyond 64 bits in its JSON
    columns exact (orjson makes them floats, so such lines are parsed again with the standard
    library). Other columns cannot hold them: integer fields stop at 64 bits."""
    if not json_fields:
        return orjson.loads

    def loads(line: bytes) -> Any:
        record = orjson.loads(line)
        if type(record) is dict:
            for name in json_fields:
                if _has_huge_float(record.get(name)):
                    return json.loads(line)
        return record

    return loads


def _has_huge_float(value: Any) -> bool:
    """Whether orjson may have turned an integer beyond 64 bits into a float here.

    Without recursion (a value may nest as deep as an archive allows); nested containers wait
    in a list made only when there are some. This runs for every JSON value read.
    """
    kind = type(value)
    if kind is float:
        return abs(value) >= 2**63
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    else:
        return False
    nested = None
    while True:
        for item in items:
            if type(item) in _CONTAINERS_AND_FLOATS:
                if type(item) is float:
                    if abs(item) >= 2**63:
                        return True
                elif nested is None:
                    nested = [item]
                else:
                    nested.append(item)
        if not nested:
            return False
        item = nested.pop()
        items = item.values() if type(item) is dict else item


_CONTAINERS_AND_FLOATS = (float, dict, list)


def json_key(parts: tuple) -> Any:
    """A flattened key as written in a record: a scalar for one part, else a list (a part that
    is a key itself, a generic reference's, a list too)."""
    if len(parts) == 1:
        return parts[0]
    return [_as_list(part) if type(part) is tuple else part for part in parts]


def _as_list(parts: tuple) -> list:
    return [_as_list(part) if type(part) is tuple else part for part in parts]


def key_tuple(value: Any) -> tuple:
    """The inverse of ``json_key``."""
    return tuple(value) if isinstance(value, list) else (value,)


def normalise_key(parts: tuple) -> tuple:
    """Key parts as they appear in JSON (so keys read from a database and from an archive
    compare equal whatever the part's type). A part that is itself a key (a generic
    reference's, see sync.generic) is a tuple: an array in the archive."""
    for part in parts:  # a plain loop: this runs for every key of a table with a composite key
        if (
            part is not None
            and type(part) is not str
            and type(part) is not int
            and type(part) is not tuple
        ):
            break
    else:
        return parts
    return tuple(
        part if isinstance(part, str | tuple) or type(part) is int else _json_part(part)
        for part in parts
    )


def _json_part(value: Any) -> Any:
    """A value as JSON gives it back; arrays as tuples (hashable, as a key part must be)."""
    return _frozen(orjson.loads(orjson.dumps(value, default=_default)))


def _frozen(value: Any) -> Any:
    return tuple(_frozen(item) for item in value) if type(value) is list else value


def column_keys(parts: list[list]) -> Iterable[tuple]:
    """The normalised keys of rows given as one list per key part (one pass, no per-row
    call when the key is a single text, the common case)."""
    if len(parts) == 1 and all(type(value) is str for value in parts[0]):
        return zip(parts[0], strict=True)
    return map(normalise_key, zip(*parts, strict=True))


def field_decoder(
    f: models.Field,
    vendor: str = "",
    connection=None,
    charset: tuple[str, Callable[[str], str | None]] | None = None,
) -> Callable[[Any], Any]:
    """A function turning an archive value into the Python value of field ``f``, refusing
    (ValidationError) a value the field cannot hold exactly on any database: an integer out of
    the field type's range, a decimal the column would round or cannot hold, a float that is
    not finite, a datetime whose instant is outside the years 1 to 9999 in UTC. Some refusals
    depend on the target database (``vendor``), so that a dry run finds them too (the database
    would only fail, or lose digits, on writing): PostgreSQL cannot store a NUL character in
    text; SQLite keeps 15 significant digits of a decimal; SQLite and MariaDB hold a duration
    in 64 bits of microseconds; MariaDB's JSON check refuses a value nested 32 levels deep, and
    its UUID type some UUIDs of version 8 and above (asked of the database, ``connection``),
    and a text column whose character set (``charset``: its name and test, see
    ``sync.collation.column_charsets``) lacks a character of the text."""
    stores_nul = vendor != "postgresql"
    if isinstance(f, models.JSONField):
        if vendor == "mysql":
            return _decode_json_for_mariadb
        return (lambda value: value) if stores_nul else _decode_json_without_nul
    if (
        vendor == "mysql"
        and isinstance(f, models.UUIDField)
        and connection is not None
        and f.db_type(connection) == "uuid"
    ):
        return _decode_mariadb_uuid(f, connection)
    internal = f.get_internal_type()
    if internal in TEXT_FIELDS:
        decode_text = _decode_text(f.max_length, stores_nul)
        return decode_text if charset is None else _decode_in_charset(decode_text, *charset)
    if internal in INTEGER_FIELDS:
        return _decode_integer(f, internal)
    if isinstance(f, models.BooleanField):

        def decode_bool(value: Any) -> Any:
            if value is None or isinstance(value, bool):
                return value
            raise ValidationError(f"expected true or false, got {value!r}")

        return decode_bool
    if isinstance(f, models.DecimalField):
        return _decode_decimal(f, SQLITE_DECIMAL_DIGITS if vendor == "sqlite" else None)
    if isinstance(f, models.DurationField):
        return _decode_duration(f, bigint=vendor in ("sqlite", "mysql"))
    if isinstance(f, models.FloatField):
        return _decode_float
    if isinstance(f, models.DateTimeField):
        return _decode_datetime(f)
    if isinstance(f, models.TimeField):
        return _decode_time(f)
    if isinstance(f, models.BinaryField):
        return _decode_binary
    to_python = f.to_python
    if stores_nul:
        return lambda value: None if value is None else to_python(value)

    def decode_without_nul(value: Any) -> Any:  # file paths and other values held as text
        value = None if value is None else to_python(value)
        if type(value) is str and "\x00" in value:
            raise ValidationError(NUL_REFUSED)
        return value

    return decode_without_nul


NUL_REFUSED = "contains a NUL character, which PostgreSQL cannot store in text"


def _decode_text(max_length: int | None, stores_nul: bool) -> Callable[[Any], Any]:
    def decode_text(value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValidationError(f"expected text, got {type(value).__name__}")
        if max_length is not None and len(value) > max_length:
            raise ValidationError(
                f"{len(value)} characters, over the field's max_length of {max_length}"
            )
        return value

    if stores_nul:
        return decode_text

    def decode_text_without_nul(value: Any) -> Any:
        value = decode_text(value)
        if value is not None and "\x00" in value:
            raise ValidationError(NUL_REFUSED)
        return value

    return decode_text_without_nul


def _decode_in_charset(
    decode_text: Callable[[Any], Any], charset: str, first_refused: Callable[[str], str | None]
) -> Callable[[Any], Any]:
    def decode_text_in_charset(value: Any) -> Any:
        value = decode_text(value)
        if value is not None:
            refused = first_refused(value)
            if refused is not None:
                raise ValidationError(
                    f"holds {refused!r} (U+{ord(refused):04X}), which its column's character "
                    f"set {charset} cannot store"
                )
        return value

    return decode_text_in_charset


def _decode_json_without_nul(value: Any) -> Any:
    """A JSON value for PostgreSQL, whose jsonb refuses a NUL character in any string."""
    if not value:
        return value
    try:
        # orjson writes NUL as \u0000: most values are cleared by one search of their text.
        if b"\\u0000" not in orjson.dumps(value):
            return value
    except orjson.JSONEncodeError:
        pass  # an integer beyond 64 bits: looked at item by item below
    todo = [value]
    while todo:  # a loop, not recursion: a value may be nested deeper than Python's stack
        item = todo.pop()
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                raise ValidationError(
                    "holds a text with a NUL character (\\u0000), which PostgreSQL's jsonb "
                    "cannot store"
                )
        elif kind is dict:
            todo += item
            todo += item.values()
        elif kind is list:
            todo += item
    return value


# MariaDB's JSON_VALID (the check Django gives a JSONField's column there) refuses a value
# nested this deep or deeper.
MARIADB_JSON_DEPTH = 32


def _decode_json_for_mariadb(value: Any) -> Any:
    """A JSON value MariaDB's check takes: nested less than ``MARIADB_JSON_DEPTH`` deep."""
    if type(value) is not list and type(value) is not dict:
        return value
    try:  # as deep as it nests, a value has at least as many brackets: most have few
        text = orjson.dumps(value)
        brackets = text.count(b"[") + text.count(b"{")
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: looked at level by level
        brackets = MARIADB_JSON_DEPTH
    if brackets >= MARIADB_JSON_DEPTH:
        depth = nesting_depth(value)
        if depth >= MARIADB_JSON_DEPTH:
            raise ValidationError(
                f"nested {depth} levels deep; MariaDB's JSON check takes at most "
                f"{MARIADB_JSON_DEPTH - 1}"
            )
    return value


def _decode_mariadb_uuid(f: models.UUIDField, connection) -> Callable[[Any], Any]:
    """UUIDs MariaDB's UUID type takes: since 10.11.5 it refuses some of version 8 and above
    (with a variant it deems wrong); the database is asked about those, the others it takes."""
    to_python = f.to_python

    def decode_uuid(value: Any) -> Any:
        value = None if value is None else to_python(value)
        if value is not None and value.bytes[6] >= 0x80:
            with connection.cursor() as cursor:
                cursor.execute("SELECT CAST(%s AS UUID) IS NULL", [str(value)])
                refused = cursor.fetchone()[0]
            if refused:
                raise ValidationError("refused by MariaDB's UUID type (its version and variant)")
        return value

    return decode_uuid


def _decode_integer(f: models.Field, internal: str) -> Callable[[Any], Any]:
    """Integers within the range of the field's type as Django declares it for every database
    (SQLite would store any 64-bit value in any integer column; the others refuse or clip)."""
    low, high = BaseDatabaseOperations.integer_field_ranges[internal]
    to_python = f.to_python

    def decode_integer(value: Any) -> Any:
        if type(value) is not int:
            if value is None:
                return None
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValidationError(f"expected an integer, got {type(value).__name__}")
            value = to_python(value)
        if low <= value <= high:
            return value
        raise ValidationError(f"out of range for a {internal} ({low} to {high})")

    return decode_integer


# Significant digits of a decimal that SQLite keeps: it stores one with a fraction as a double.
SQLITE_DECIMAL_DIGITS = 15
# A duration held as a signed 64-bit count of microseconds (SQLite, MariaDB).
BIGINT_MICROSECONDS = datetime.timedelta(microseconds=2**63 - 1)


def _decode_duration(f: models.DurationField, bigint: bool) -> Callable[[Any], Any]:
    """Durations Python holds (at most 999,999,999 days) and, where the database keeps one as
    a 64-bit count of microseconds (``bigint``), that it holds."""
    to_python = f.to_python

    def decode_duration(value: Any) -> Any:
        if value is None:
            return None
        try:
            value = to_python(value)
        except OverflowError as exc:  # timedelta's own limit, or a number beyond a C int
            raise ValidationError("longer than a duration can be (999,999,999 days)") from exc
        if bigint and value is not None and abs(value) > BIGINT_MICROSECONDS:
            raise ValidationError(
                "longer than this database holds (64 bits of microseconds, about 292,000 years)"
            )
        return value

    return decode_duration


def _decode_decimal(f: models.DecimalField, max_significant: int | None) -> Callable[[Any], Any]:
    """Decimals the column holds exactly: PostgreSQL and MariaDB would round extra decimal
    places and SQLite keeps them, so a value with more (other than zeros) is refused, as is one
    with more digits before the point than the field has room for, or, where the database
    keeps fewer (``max_significant``), more significant digits than it keeps."""
    places = f.decimal_places
    limit = decimal.Decimal(10) ** (f.max_digits - places)
    quantum = decimal.Decimal(1).scaleb(-places)
    to_python = f.to_python

    def decode_decimal(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, float):  # as written in the JSON, not rounded to max_digits
            value = decimal.Decimal(repr(value))
        number = to_python(value)
        if not number.same_quantum(quantum):  # exactly ``places`` decimals (as exported)
            _, digits, exponent = number.as_tuple()
            if exponent < -places and any(digits[exponent + places :]):
                raise ValidationError(
                    f"more than {places} decimal places (a DecimalField({f.max_digits}, "
                    f"{places}) would round it)"
                )
        if not -limit < number < limit:
            raise ValidationError(
                f"more than {f.max_digits - places} digits before the decimal point (a "
                f"DecimalField({f.max_digits}, {places}) cannot hold it)"
            )
        if max_significant is not None and significant_digits(number) > max_significant:
            raise ValidationError(
                f"{significant_digits(number)} significant digits; this database keeps "
                f"{max_significant} and would change the value"
            )
        return number

    return decode_decimal


def significant_digits(number: decimal.Decimal) -> int:
    """Digits from the first non-zero one to the last non-zero one (0 for zero)."""
    digits = number.as_tuple().digits
    return len("".join(map(str, digits)).strip("0"))


def _decode_float(value: Any) -> Any:
    """Finite floats only: MariaDB cannot store NaN or infinities, SQLite turns NaN into NULL."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(f"expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except (ValueError, OverflowError) as exc:
        raise ValidationError(f"not a number a float can hold ({exc})") from exc
    if not math.isfinite(number):
        raise ValidationError("not a finite number")
    return number


EDGE_YEARS = (datetime.MINYEAR, datetime.MAXYEAR)


def _decode_datetime(f: models.DateTimeField) -> Callable[[Any], Any]:
    """ISO 8601 with the C parser; anything else through the field's own ``to_python``.

    An instant must lie within the years 1 to 9999 in UTC, where every database stores it:
    ``0001-01-01T00:30:00+01:00`` is in the year 0 there (SQLite and MariaDB cannot convert it,
    PostgreSQL stores it as 1 BC and no export can read it back)."""
    to_python = f.to_python
    default_tz = datetime.UTC

    def decode(value: Any) -> Any:
        if value is None:
            return None
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            parsed = to_python(value)
        if parsed.tzinfo is None:
            if not settings.USE_TZ:
                return parsed
            parsed = parsed.replace(tzinfo=default_tz)
        if parsed.year in EDGE_YEARS:
            try:
                # Stored as UTC: 9999-12-31T23:00-05:00 is in the year 10000 there, which no
                # database (nor Python) holds. (An offset is less than a day.)
                parsed.astimezone(default_tz)
            except OverflowError as exc:
                raise ValidationError("outside the years 1 to 9999 once in UTC") from exc
        return parsed

    return decode


def _decode_time(f: models.TimeField) -> Callable[[Any], Any]:
    """Times as written (``08:00:00``); one with a UTC offset is refused, not read without it
    (as Django's ``to_python`` would: a ``TimeField`` holds no offset)."""
    to_python = f.to_python

    def decode_time(value: Any) -> Any:
        if type(value) is str:
            try:
                parsed = datetime.time.fromisoformat(value)
            except ValueError:
                pass
            else:
                if parsed.tzinfo is not None:
                    raise ValidationError("a time with a UTC offset; the field holds none")
                return parsed
        return None if value is None else to_python(value)

    return decode_time


def _decode_binary(value: Any) -> Any:
    """Base64 as the export writes it; any other character is refused (the standard
    decoder would skip it, and store other bytes than the archive's maker meant)."""
    if value is None:
        return None
    if type(value) is not str:
        raise ValidationError(f"expected base64 text, got {type(value).__name__}")
    try:
        return memoryview(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"not base64 ({exc})") from exc


class RecordEncoder:
    """What to read for a table's records (``lookups``: a foreign key's target key parts in
    place of its id, a generic reference as a ``GenericPart``) and how to fold what was read
    back into record fields."""

    def __init__(self, plan: SyncModel):
        self.plan = plan
        self.lookups: list[str | GenericPart] = []
        self.slots: list[tuple[str, int, int]] = []  # (name, first column, last column + 1)
        for f in plan.fields:
            start = len(self.lookups)
            if f.name in plan.references:
                self.lookups += key_paths(plan.references[f.name].target, f"{f.name}__")
            elif f.name in plan.generic:
                self.lookups.append(GenericPart(plan.generic[f.name].ct_field, f.name))
            else:
                self.lookups.append(f.attname)
            self.slots.append((f.name, start, len(self.lookups)))
        self.names = [name for name, _, _ in self.slots]

    def field_columns(self, columns: list[list]) -> list[list]:
        """The columns read with ``lookups`` as one column per record field: a foreign key with
        several key parts becomes a list (None when every part is None)."""
        values = []
        for _, start, end in self.slots:
            if end - start == 1:
                values.append(columns[start])
                continue
            width = end - start
            values.append(
                [
                    None if parts.count(None) == width else list(parts)
                    for parts in zip(*columns[start:end], strict=True)
                ]
            )
        return values
