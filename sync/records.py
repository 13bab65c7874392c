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
from sync.schema import SyncModel
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


class UnwritableValue(ValueError):
    """A record value no archive line can hold as the import reads it back."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"field {field!r} {reason}")
        self.field = field
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
    """A flattened key as written in a record: a scalar for one part, else a list."""
    return parts[0] if len(parts) == 1 else list(parts)


def key_tuple(value: Any) -> tuple:
    """The inverse of ``json_key``."""
    return tuple(value) if isinstance(value, list) else (value,)


def normalise_key(parts: tuple) -> tuple:
    """Key parts as they appear in JSON (so keys read from a database and from an archive
    compare equal whatever the part's type)."""
    for part in parts:  # a plain loop: this runs for every key of a table with a composite key
        if part is not None and type(part) is not str and type(part) is not int:
            break
    else:
        return parts
    return tuple(orjson.loads(orjson.dumps(list(parts), default=_default)))


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
    place of its id) and how to fold what was read back into record fields."""

    def __init__(self, plan: SyncModel):
        self.plan = plan
        self.lookups: list[str] = []
        self.slots: list[tuple[str, int, int]] = []  # (name, first column, last column + 1)
        for f in plan.fields:
            start = len(self.lookups)
            if f.name in plan.references:
                target_paths = plan.references[f.name].target_key_paths
                self.lookups += [f"{f.name}__{path}" for path in target_paths]
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
