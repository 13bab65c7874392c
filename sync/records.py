"""Records: one row of one table as a database-neutral JSON object.

A record maps field names to values. Foreign keys hold the target's sync key (a scalar when the
key has one part, else a list), many-to-many fields a sorted list of such keys. Plain values are
JSON natives; datetimes are RFC 3339 with microseconds and offset; decimals are strings (exact);
binary is base64; durations are ISO 8601. Decoding goes back through each field's own
``to_python``, so any database gets exactly the value that was written.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.duration import duration_iso_string

from sync.fieldtypes import TEXT_FIELDS
from sync.generic import GenericPart
from sync.schema import SyncModel, key_paths

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


def dumps_line(record: dict) -> bytes:
    try:
        return orjson.dumps(record, default=_default, option=JSON_OPTIONS)
    except orjson.JSONEncodeError:
        # orjson writes integers of at most 64 bits; a JSON column may hold bigger ones (and
        # PostgreSQL's jsonb hands back a float such as 1e20 as one): write their digits.
        return orjson.dumps(_big_ints_as_digits(record), default=_default, option=JSON_OPTIONS)


def _big_ints_as_digits(value: Any) -> Any:
    if type(value) is int and not -(2**63) <= value < 2**64:
        return orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {name: _big_ints_as_digits(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints_as_digits(item) for item in value]
    return value


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
    """Whether orjson may have turned an integer beyond 64 bits into a float here."""
    kind = type(value)
    if kind is float:
        return abs(value) >= 2**63
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    for item in value:  # noqa: SIM110 - a plain loop: this runs for every JSON value read
        if type(item) in _CONTAINERS_AND_FLOATS and _has_huge_float(item):
            return True
    return False


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


def field_decoder(f: models.Field) -> Callable[[Any], Any]:
    """A function turning an archive value into the Python value of field ``f``."""
    if isinstance(f, models.JSONField):
        return lambda value: value
    internal = f.get_internal_type()
    if internal in TEXT_FIELDS:
        max_length = f.max_length

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

        return decode_text
    if isinstance(f, models.BooleanField):

        def decode_bool(value: Any) -> Any:
            if value is None or isinstance(value, bool):
                return value
            raise ValidationError(f"expected true or false, got {value!r}")

        return decode_bool
    if isinstance(f, models.DateTimeField):
        return _decode_datetime(f)
    to_python = f.to_python
    return lambda value: None if value is None else to_python(value)


def _decode_datetime(f: models.DateTimeField) -> Callable[[Any], Any]:
    """ISO 8601 with the C parser; anything else through the field's own ``to_python``."""
    to_python = f.to_python
    default_tz = datetime.UTC

    def decode(value: Any) -> Any:
        if value is None:
            return None
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            return to_python(value)
        if parsed.tzinfo is None and settings.USE_TZ:
            parsed = parsed.replace(tzinfo=default_tz)
        return parsed

    return decode


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
