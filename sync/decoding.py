"""Decoding: an archive record (JSON values) becomes the values an import compares and
writes, by attname, with its references resolved to target ids (or placeholders for rows the
import adds, see ``sync.keys.PlaceholderPk``). A bad value is refused naming the record and the
field, never quoting a secret."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import models

from sync.errors import ImportFailed
from sync.keys import PlaceholderPk, key_types_shown, mistyped_key, target_key
from sync.schema import SECRET_NOT_SHOWN

if TYPE_CHECKING:
    from sync.generic import GenericColumns

SHOW_CHARS = 60


@dataclass
class Column:
    """One archive column of a table: its field, how its JSON value is decoded, the model a
    foreign key names, and whether the reference waits for the second pass (it closes a cycle
    or points into its own table)."""

    field: models.Field
    decode: Callable[[Any], Any]
    reference: type[models.Model] | None  # FK target
    deferred: bool = False


def short(value: Any) -> Any:
    """A value as a message shows it: long texts cut."""
    if isinstance(value, str) and len(value) > SHOW_CHARS:
        return value[: SHOW_CHARS - 1] + "…"
    if isinstance(value, PlaceholderPk):
        return repr(value)
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    return str(value)


def mistyped_reference(
    fail: Fail, key: tuple, f: models.Field, model: type[models.Model], raw: Any, secret: bool
) -> ImportFailed:
    """The refusal of a reference whose key parts have other JSON types than ``model``'s key
    (``true`` or ``1.0`` for the id 1): a secret reference's key is not quoted."""
    shown = SECRET_NOT_SHOWN if secret else repr(short(raw))
    message = (
        f"field {f.name!r} refers to {model._meta.label} by {shown}, but that model's "
        f"key is ({key_types_shown(model)})"
    )
    return fail(key, message, f.name, None if secret else raw)


def unfound_reference(
    fail: Fail, key: tuple, f: models.Field, model: type[models.Model], raw: Any, secret: bool
) -> ImportFailed:
    """The refusal of a reference to a row that is neither in the archive nor in the target:
    a secret reference's key is not quoted."""
    shown = SECRET_NOT_SHOWN if secret else repr(raw)
    message = (
        f"field {f.name!r} refers to {model._meta.label} {shown}, which is neither in the "
        f"archive nor in the target database"
    )
    return fail(key, message, f.name, None if secret else raw)


# fail(key, message, field=None, value=None) → the error to raise about a record
Fail = Callable[..., ImportFailed]
# unresolved(model, raw key, record key, field) → the id of a row the chunk's maps lack
Unresolved = Callable[[type[models.Model], Any, tuple, models.Field], Any]


class RecordDecoder:
    """Decodes the records of one table.

    ``maps`` (model → key → id) are the reference maps of the chunk being decoded, set by the
    loader before each chunk; a key they lack goes to ``unresolved`` (a dry run's new row, or
    a clear error).
    """

    def __init__(
        self,
        columns: list[Column],
        m2m: list[models.ManyToManyField],
        secrets: set[str],
        fail: Fail,
        unresolved: Unresolved,
    ):
        self.columns = columns
        self.m2m = m2m
        self.secrets = secrets
        self.fail = fail
        self.unresolved = unresolved
        self.maps: dict[type[models.Model], dict] = {}
        self.generic: GenericColumns | None = None  # set once the table's are known

    def decode(self, key: tuple, record: dict) -> tuple[dict[str, Any], dict[str, Any], dict]:
        """(values by attname, deferred references by name, m2m ids by name) of a record."""
        values: dict[str, Any] = {}
        deferred: dict[str, Any] = {}
        for column in self.columns:
            f = column.field
            raw = record.get(f.name)
            if column.reference is not None:
                if raw is None:
                    if not f.null and not column.deferred:
                        raise self.fail(key, f"field {f.name!r} may not be empty", f.name)
                    values[f.attname] = None
                elif column.deferred:
                    deferred[f.name] = raw
                    values[f.attname] = None
                else:
                    values[f.attname] = self.resolve(column.reference, raw, key, f)
                continue
            try:
                value = column.decode(raw)
            except (ValidationError, ValueError, TypeError, ArithmeticError) as exc:
                shown = self.bad(f, raw, exc)
                safe = None if f.attname in self.secrets else raw
                raise self.fail(key, f"field {f.name!r}: bad value {shown}", f.name, safe) from exc
            if value is None and not f.null:
                raise self.fail(key, f"field {f.name!r} may not be empty", f.name)
            values[f.attname] = value
        if self.generic is not None:
            self.generic.apply(record, values, deferred)
        m2m = {}
        for f in self.m2m:
            raw = record.get(f.name) or []
            if not isinstance(raw, list):
                raise self.fail(key, f"field {f.name!r} must be a list of keys", f.name)
            m2m[f.name] = {self.resolve(f.related_model, k, key, f) for k in raw}
        return values, deferred, m2m

    def resolve(self, model: type[models.Model], raw: Any, key: tuple, f: models.Field) -> Any:
        """The target id a reference names: from the chunk's maps, else ``unresolved``."""
        if type(raw) is not str and mistyped_key(model, raw):
            raise mistyped_reference(self.fail, key, f, model, raw, f.attname in self.secrets)
        pk = self.maps[model].get(target_key(raw))
        return self.unresolved(model, raw, key, f) if pk is None else pk

    def bad(self, f: models.Field, raw: Any, exc: Exception) -> str:
        """A refused value and why, as a message shows them: a secret's not at all (the
        reason may quote the value)."""
        if f.attname in self.secrets:
            return SECRET_NOT_SHOWN
        message = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
        return f"{short(raw)!r} ({message})"
