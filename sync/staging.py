"""Staging: a table's decided writes of one chunk, held at the write gate until the archive is
verified (``sync.writer.WriteGate``), then written — new rows, updates, M2M links — with the
placeholders of rows the import adds (``sync.keys.PlaceholderPk``) replaced by their ids, which
exist by then (writes run in order)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import models

from sync.keys import PlaceholderPk, ids_of_keys
from sync.tablecolumns import TableColumns

if TYPE_CHECKING:
    from sync.generic import GenericColumns
    from sync.importer import Importer
    from sync.uniques import UniqueValues


@dataclass
class StagedChunk:
    """The writes of one chunk: new rows (values by attname), updates (id, values), M2M
    changes by field name (id, old ids, new ids), and the new rows' (key, M2M sets)."""

    inserts: list[dict] = field(default_factory=list)
    updates: list[tuple[Any, dict]] = field(default_factory=list)
    m2m_writes: dict[str, list] = field(default_factory=lambda: defaultdict(list))
    new_m2m: list[tuple[tuple, dict]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inserts or self.updates or self.m2m_writes)


class TableStager:
    """Stages and writes one table's chunks.

    ``reads_back_ids``: whether new rows' ids are read back after they are written (a whole key
    index holds them, or their M2M sets need them); set once the matcher knows the table's size.
    """

    def __init__(
        self,
        importer: Importer,
        columns: TableColumns,
        references: dict[str, type[models.Model]],
        m2m: list[models.ManyToManyField],
        uniques: UniqueValues | None,
        key_paths: list,
    ):
        self.importer = importer
        self.columns = columns
        self.model = columns.model
        self.references = references  # attname → model of the references resolved on reading
        self.m2m = m2m
        self.uniques = uniques
        self.key_paths = key_paths
        self.generic: GenericColumns | None = None
        self.reads_back_ids = False
        # M2M changes (by field name) linking rows of this table to rows of a later chunk:
        # written once every row of the table is (``finish``).
        self.postponed: dict[str, list] = defaultdict(list)

    def stage(self, chunk: StagedChunk) -> None:
        """Hand the chunk's writes to the gate (nothing to write: nothing handed)."""
        if chunk:
            self.importer.gate.submit(
                lambda: self.write(chunk), len(chunk.inserts) + len(chunk.updates)
            )

    def write(self, chunk: StagedChunk) -> None:
        """Write a chunk; new rows' ids are read back when something needs them (a whole
        index holds them; their M2M sets are written with them)."""
        inserts, updates, m2m_writes = chunk.inserts, chunk.updates, chunk.m2m_writes
        writer = self.importer.writer
        self.realise_rows(inserts + [values for _, values in updates])
        if self.uniques is not None:
            self.uniques.make_room([(None, values) for values in inserts] + updates)
        writer.insert_rows(self.columns, inserts)
        if inserts and self.reads_back_ids:
            manager = self.model._base_manager.using(self.importer.using)
            ids = ids_of_keys(manager, self.key_paths, [key for key, _ in chunk.new_m2m])
            self.importer.key_index(self.model).fill(ids)
            for f in self.m2m:
                m2m_writes[f.name] += [(ids[key], set(), m2m[f.name]) for key, m2m in chunk.new_m2m]
        writer.update_rows(self.columns, updates)
        self.realise_m2m(m2m_writes)
        for name, changes in m2m_writes.items():
            writer.write_m2m(self.model, name, changes)

    def realise_rows(self, rows: list[dict]) -> None:
        """Replace the placeholders in rows about to be written by the ids of the rows they
        stand for, written by now (writes run in order)."""
        for attname, model in self.references.items():
            keys = {v.key for row in rows if type(v := row.get(attname)) is PlaceholderPk}
            if keys:
                ids = self.importer.ids_of_new_rows(model, keys)
                for row in rows:
                    if type(value := row.get(attname)) is PlaceholderPk:
                        row[attname] = ids[value.key]
        if self.generic is not None:
            self.generic.realise(rows)

    def realise_m2m(self, m2m_writes: dict[str, list]) -> None:
        """The same for the targets of M2M changes (pk, old ids, new ids). A link into this
        table may name a row of a later chunk, not written yet: that change is postponed to
        ``finish``."""
        for name, changes in m2m_writes.items():
            keys = {t.key for _, _, new in changes for t in new if type(t) is PlaceholderPk}
            if not keys:
                continue
            model = self.model._meta.get_field(name).related_model
            if model is self.model:
                ids = self.importer.ids_of_written_rows(model, keys)
                later = [c for c in changes if not placeholders(c[2]) <= ids.keys()]
                if later:
                    self.postponed[name] += later
                    changes[:] = [c for c in changes if placeholders(c[2]) <= ids.keys()]
            else:
                ids = self.importer.ids_of_new_rows(model, keys)
            changes[:] = [
                (pk, old, {ids[t.key] if type(t) is PlaceholderPk else t for t in new})
                for pk, old, new in changes
            ]

    def finish(self) -> None:
        """After the table's last chunk: write the links postponed by ``realise_m2m`` (the
        rows they name are written by then: writes run in order)."""
        self.importer.gate.submit(self.write_postponed, 0)

    def write_postponed(self) -> None:
        postponed, self.postponed = self.postponed, defaultdict(list)
        if not postponed:
            return
        self.realise_m2m(postponed)
        for name, changes in postponed.items():
            self.importer.writer.write_m2m(self.model, name, changes)


def placeholders(ids: set) -> set[tuple]:
    """The keys of the placeholders among M2M target ids."""
    return {t.key for t in ids if type(t) is PlaceholderPk}
