"""What an import writes into one table: the columns its archive holds, how a record's decoded
values become query parameters, and what new rows get for the fields the archive lacks.

``TableColumns`` is all the writer (``sync.writer.RowWriter``) knows of an import's table; the
checks here (``unwritable``, ``absent_fields``) refuse an archive whose fields cannot be written
before anything is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import models

from sync.errors import ImportFailed
from sync.schema import SyncModel, is_sensitive
from sync.writer import db_value_preparer


@dataclass(frozen=True)
class AbsentField:
    """A field the archive lacks, and what the rows the import adds get in its place (rows it
    overwrites keep theirs: only the archive's fields are written)."""

    field: models.Field
    fill: str  # one of the FILL_* below

    FILL_NOW = "now"  # auto_now / auto_now_add: the time of the import
    FILL_DEFAULT = "default"  # the model's default, else NULL
    FILL_DATABASE = "database"  # the column's db_default: left to the database
    FILL_EMPTY = "empty"  # a secret the export left out: the field's empty value

    @property
    def note(self) -> str:
        f = self.field
        given = {
            self.FILL_NOW: "the time of the import used",
            self.FILL_DEFAULT: "default used" if f.has_default() else "default used (NULL)",
            self.FILL_DATABASE: "the database's default used",
            self.FILL_EMPTY: "a secret the export left out: new rows get an empty value",
        }[self.fill]
        return f"field {f.name!r} not in archive, {given}"


def unwritable(model: type[models.Model], f: models.Field) -> str | None:
    """Why the import cannot write field ``f`` of ``model`` from its records (None: it can).
    Such a field is refused, not skipped: its values would be lost behind a report that says
    nothing changed."""
    if f.many_to_many and f in model._meta.local_many_to_many:
        if f in SyncModel(model, ()).m2m_fields:
            return None
        through = f.remote_field.through._meta.label
        return (
            f"it is a many-to-many relation through {through}, a table of its own that holds "
            f"these links (import that table's records)"
        )
    if getattr(f, "generated", False):
        return "the database computes it"
    if not f.concrete:
        if f.auto_created:  # ForeignObjectRel
            return "it is a reverse relation, held by the rows that point here"
        return "it is not a column of this table"
    return None


def absent_fields(model: type[models.Model], names: Iterable[str]) -> list[AbsentField]:
    """The fields of ``model`` that ``names`` (an archive's) lack, with what new rows get; a
    field that has no default, does not allow NULL and is no secret is refused, naming it."""
    names = set(names)
    absent = []
    for f in model._meta.concrete_fields:
        if f.name in names or f.generated or isinstance(f, models.fields.AutoFieldMixin):
            continue
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            fill = AbsentField.FILL_NOW
        elif f.has_default():
            fill = AbsentField.FILL_DEFAULT
        elif f.has_db_default():
            fill = AbsentField.FILL_DATABASE
        elif f.null:
            fill = AbsentField.FILL_DEFAULT  # NULL: what get_default() gives such a field
        elif is_sensitive(model, f.name) and f.empty_strings_allowed:
            fill = AbsentField.FILL_EMPTY
        else:
            raise ImportFailed(
                f"{model._meta.label}: field {f.name!r} is not in the archive, and the model "
                f"here has no default for it and does not allow NULL."
            )
        absent.append(AbsentField(f, fill))
    return absent


@dataclass(frozen=True)
class TableColumns:
    """The writer's view of one table an import writes.

    ``fields``: the archive's columns (M2M relations apart), in its order; ``absent``: the
    fields it lacks and what new rows get; ``writes_pk``: whether the archive gives the
    primary key (the sequence is reset after the import); ``prepare``: attname → how a decoded
    value becomes a query parameter (None: as it is, see ``db_value_preparer``).
    """

    model: type[models.Model]
    fields: list[models.Field]
    absent: list[AbsentField]
    writes_pk: bool
    by_attname: dict[str, models.Field]
    prepare: dict[str, Callable[[Any], Any] | None]

    @classmethod
    def of(cls, model: type[models.Model], fields: list[models.Field], connection) -> TableColumns:
        concrete = model._meta.concrete_fields
        names = {f.name for f in fields}
        return cls(
            model=model,
            fields=fields,
            absent=absent_fields(model, names),
            writes_pk=model._meta.pk.name in names,
            by_attname={f.attname: f for f in concrete},
            prepare={f.attname: db_value_preparer(f, connection) for f in concrete},
        )

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    def params(self, values: dict, attnames: Iterable[str]) -> list:
        """Query parameters for ``values`` (by attname) in ``attnames`` order."""
        prepare = self.prepare
        return [
            value if (prep := prepare[attname]) is None else prep(value)
            for attname in attnames
            for value in (values[attname],)
        ]
