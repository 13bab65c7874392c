"""Import: load records into a database, matched by sync key, in one transaction.

Modes:

- ``replace`` — the chosen tables end up holding exactly the archive's records: new ones
  inserted, existing ones overwritten, rows whose key is not in the archive deleted (following
  ``on_delete``; cascades are reported).
- ``update`` — new records inserted; an existing one overwritten only when the archive's
  ``updated_at`` is newer (models without ``updated_at``: when content differs); nothing deleted.
- ``append`` — only records whose key is not in the target are inserted.

The same pass computes the diff and, unless it is a dry run, writes. A dry run reads the target
but never writes — not one row, not one sequence value, no signal — so a preview has no side
effects. Writes are plain SQL (``sync.writer``: no ``save()``, no signals, no ``auto_now``):
timestamps come from the archive. Records come from a ``sync.sources`` source; keys become
ids through ``sync.keys``.

References are resolved by sync key against rows of the same archive or rows already in the
target. Tables load in dependency order; a reference that closes a cycle (User → Instructor →
Image → Project → User) or points into its own table (Project.regio) is written in a second
pass once every row exists.

Where each step lives: ``sync.matching`` (records to target rows, by sync key),
``sync.decide`` (insert, update, skip or unchanged), ``sync.decoding`` (values and references),
``sync.staging`` and ``sync.writer`` (writes, held until the archive is verified), with the
table's column description in ``sync.tablecolumns``; ``TableLoader`` below runs them for one
table, ``Importer`` for the whole archive (second-pass references, replace's deletions).
"""

from __future__ import annotations

import gc
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import DatabaseError, IntegrityError, connections, models, transaction
from django.db.models.deletion import ProtectedError, RestrictedError

from sync import generic
from sync.collation import column_charsets, strict_session
from sync.columns import reads_datetimes_as_text
from sync.conf import sync_settings
from sync.decide import (
    SAME,
    SAME_STAMP,
    SKIP,
    UNSTAMPED,
    Decision,
    decide,
    needs_content,
    stamp_order,
)
from sync.decoding import Column, RecordDecoder, mistyped_reference, unfound_reference
from sync.deletions import (
    DryRunCollector,
    MovedReferences,
    SilentCollector,
    cascade_causes,
    deleted_ids,
    updated_ids,
)
from sync.errors import ImportFailed
from sync.generic import GenericColumns, GenericImport, keys_by_pk
from sync.jobs.reporter import JobCancelled, JobReporter
from sync.keys import (
    CHUNK,
    KeyIndex,
    PlaceholderPk,
    SeenKeys,
    chunked,
    filter_in,
    keyed_ids,
    mistyped_key,
    target_key,
)
from sync.matching import KeyMatcher, stamp_peek
from sync.plan import PlanRecorder
from sync.records import field_decoder, json_key
from sync.schema import (
    SECRET_NOT_SHOWN,
    SchemaError,
    SyncModel,
    is_sensitive,
    key_paths,
    plan_models,
    resolve_tables,
    sync_key_fields,
)
from sync.sources import RecordSource, SourceTable
from sync.staging import StagedChunk, TableStager
from sync.tablecolumns import TableColumns, absent_fields, unwritable
from sync.uniques import UniqueValues, key_lookup, unique_groups
from sync.writer import RowWriter, Verdict, WriteGate, database_error_line

MODES = ("replace", "update", "append")
CASCADE = "cascade (on_delete)"  # the reason of a deletion an on_delete rule makes

__all__ = ["MODES", "ImportFailed", "ImportResult", "import_records", "stamp_peek"]


# -- the diff --------------------------------------------------------------------------------


@dataclass
class TableDiff:
    label: str
    name: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    deleted: int = 0
    dropped: int = 0  # left out by --drop-unresolved (see sync.generic)
    same_stamp: int = 0  # skipped: the same updated_at as the target's, other content
    notes: list[str] = field(default_factory=list)  # e.g. fields the archive lacks

    @property
    def total_changes(self) -> int:
        return self.new + self.updated + self.deleted

    def drop(self, key: tuple, reason: str, recorder: PlanRecorder | None) -> None:
        self.dropped += 1
        if recorder is not None:
            recorder.record(self.label, json_key(key), "skip", reason=reason)

    def as_dict(self) -> dict:
        return {
            "table": self.label,
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "deleted": self.deleted,
            "dropped": self.dropped,
            "same_stamp": self.same_stamp,
            "notes": self.notes,
        }


@dataclass
class ImportResult:
    mode: str
    dry_run: bool
    tables: dict[str, TableDiff] = field(default_factory=dict)
    cascaded: Counter = field(default_factory=Counter)  # table → rows deleted by on_delete
    backup_id: str | None = None

    @property
    def total_changes(self) -> int:
        return sum(t.total_changes for t in self.tables.values()) + sum(self.cascaded.values())

    def counts(self) -> dict:
        return {label: t.as_dict() for label, t in self.tables.items()}

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "dry_run": self.dry_run,
            "backup_id": self.backup_id,
            "tables": [t.as_dict() for t in self.tables.values()],
            "cascaded": dict(self.cascaded),
            "total_changes": self.total_changes,
        }


# -- the engine ----------------------------------------------------------------------------------


# A unique key's refusal by MySQL and MariaDB, which quotes the value (see without_secrets).
DUPLICATE_ENTRY = re.compile(r"Duplicate entry '(?P<value>.*)' for key '(?P<key>[^']*)'", re.DOTALL)

# What the diff shows in place of a secret's values (see TableLoader.shown).
SECRET = "(secret)"
CHANGED = "(changed)"


def ids_in(value: Any) -> Iterable:
    """The target ids in a reference's or an M2M set's value (placeholders: not yet)."""
    values = value if isinstance(value, set) else (value,)
    return [v for v in values if v is not None and type(v) is not PlaceholderPk]


def referenced_keys_of(value: Any, keys: dict) -> Any:
    """A reference's value (an id, a dry run's placeholder, an M2M set of them) as sync keys."""
    if isinstance(value, set):
        return sorted((referenced_keys_of(v, keys) for v in value), key=repr)
    if value is None:
        return None
    key = value.key if type(value) is PlaceholderPk else keys.get(value)
    return None if key is None else json_key(key)


class TableLoader:
    """Loads one table's records (see the module doc for the semantics): the conductor of the
    stages, each in a module of its own —

    - ``sync.matching``: which target row each record is (and, in update mode, its stamps);
    - ``sync.decide``: what happens to the record (insert, update, skip, unchanged);
    - ``sync.decoding``: the record's values, references resolved to ids;
    - ``sync.staging``: the chunk's writes, held until the archive is verified, then written
      by ``sync.writer`` from the table's column description (``sync.tablecolumns``).

    What stays here: counting (the table's ``TableDiff``), the plan's entries, and the checks
    that need more than one record (replace mode's references to deleted rows).
    """

    def __init__(self, importer: Importer, plan: SyncModel, source: SourceTable):
        self.importer = importer
        self.plan = plan
        self.model = plan.model
        self.label = plan.label
        self.using = importer.using
        self.connection = connections[importer.using]
        self.diff = TableDiff(self.label, str(self.model._meta.verbose_name_plural))
        opts = self.model._meta
        columns: list[Column] = []
        self.m2m: list[models.ManyToManyField] = []
        charsets = column_charsets(self.model, self.using)
        for name in source.fields:
            f = opts.get_field(name)
            if f.many_to_many:
                self.m2m.append(f)
                continue
            columns.append(
                Column(
                    f,
                    field_decoder(f, self.connection.vendor, self.connection, charsets.get(f.name)),
                    f.related_model if f.is_relation else None,
                    name in plan.deferred,
                )
            )
        self.columns = columns
        self.table = TableColumns.of(self.model, [c.field for c in columns], self.connection)
        present = {c.field.name for c in columns}
        self.deferred_fields = [c.field for c in columns if c.deferred]
        self.deferred_attnames = {f.attname for f in self.deferred_fields}
        self.by_attname = self.table.by_attname
        self.diff.notes = [absent.note for absent in self.table.absent]
        # Fields whose values the diff and messages never show (SYNC_SENSITIVE_FIELDS).
        self.secrets = {f.attname for f in opts.concrete_fields if is_sensitive(self.model, f.name)}
        self.has_updated_at = "updated_at" in present and isinstance(
            opts.get_field("updated_at"), models.DateTimeField
        )
        self.stamped = importer.mode == "update" and self.has_updated_at
        self.matcher = KeyMatcher(
            plan, source, self.using, self.stamped, importer.datetimes_as_text, self.fail
        )
        self.key_paths = self.matcher.key_paths
        self.stale: dict[Any, tuple] = {}
        # Replace mode: target rows of this table that its own records refer to (id → the
        # first referring key and field), checked against ``stale`` once the table has loaded.
        self.own_references: dict[Any, tuple[tuple, str]] = {}
        # M2M items naming rows of this table not read yet: linked key → (the first
        # referring key, field, raw key); each must be read by the end of the table.
        self.forward_links: dict[tuple, tuple[tuple, models.Field, Any]] = {}
        # New rows' ids are read back only when something needs them: a later table's
        # references, this table's M2M sets or its second-pass references.
        self.needs_ids = plan.model in importer.needs_ids
        # References resolved while reading (deferred ones wait for the second pass), by model:
        # (reference field names, M2M field names).
        self.references: dict[type[models.Model], tuple[list[str], list[str]]] = defaultdict(
            lambda: ([], [])
        )
        for column in columns:
            if column.reference is not None and not column.deferred:
                self.references[column.reference][0].append(column.field.name)
        for f in self.m2m:
            self.references[f.related_model][1].append(f.name)
        self.reference_attnames = {
            c.field.attname: c.reference for c in columns if c.reference and not c.deferred
        }
        self.deferred: list[tuple[tuple, Any, str, Any, str]] = []
        self.uniques = self.unique_values()
        self.decoder = RecordDecoder(columns, self.m2m, self.secrets, self.fail, self.unresolved)
        self.stager = TableStager(
            importer, self.table, self.reference_attnames, self.m2m, self.uniques, self.key_paths
        )
        self.generic = GenericColumns.of(self)  # None: the table has no generic references
        self.decoder.generic = self.stager.generic = self.generic
        # key → content type attname → the one its row had, for the second pass's plan
        self.replaced_types: dict[tuple, dict[str, Any]] = defaultdict(dict)
        # Generic references a plan shows as keys: (id attname, content type attname).
        self.generic_attnames = [
            (opts.get_field(name).attname, opts.get_field(relation.ct_field).attname)
            for name, relation in plan.generic.items()
            if name in present and relation.ct_field in present
        ]
        # What a plan shows as sync keys: references by attname, M2M sets by name.
        self.shown_references = {
            c.field.attname: c.reference for c in columns if c.reference is not None
        } | {f.name: f.related_model for f in self.m2m}

    @property
    def keys_seen(self) -> SeenKeys:
        return self.matcher.keys_seen

    @property
    def stores_nul(self) -> bool:
        return self.matcher.stores_nul

    def fail(
        self, key: tuple, message: str, field: str | None = None, value: Any = None
    ) -> ImportFailed:
        """The error about the record ``key``; ``value`` only when it is no secret."""
        return ImportFailed(
            f"{self.label} {json_key(key)!r}: {message}",
            table=self.label,
            key=json_key(key),
            field=field,
            value=value,
        )

    def unresolved(self, model: type[models.Model], raw: Any, key: tuple, f: models.Field) -> Any:
        """A reference the chunk's maps lack, as the importer resolves it (a dry run's new
        rows; a clear error when there is none). An M2M item naming a row of this very table
        that is neither in the target nor read yet may name a record of a later chunk: a
        placeholder for now, checked when the table has loaded (``release``)."""
        if model is self.model and f.many_to_many:
            linked = target_key(raw)
            pk = self.importer.id_of(model, linked)
            if pk is None:
                self.forward_links.setdefault(linked, (key, f, raw))
                pk = PlaceholderPk(linked)
            return pk
        return self.importer.resolve(model, raw, self, key, f)

    # -- the plan --------------------------------------------------------------------------
    def record(self, planned: list[tuple[tuple, str, dict, str]]) -> None:
        """Record (key, action, fields, reason) entries in the plan; fields by attname (or M2M
        name), an update's as (old, new). References become the sync keys of the records they
        name (read once for the whole chunk), secrets a marker."""
        recorder = self.importer.recorder
        for (key, action, _, reason, *_), fields in zip(planned, self.shown(planned), strict=True):
            recorder.record(self.label, json_key(key), action, fields, reason)

    def shown(self, planned: list[tuple]) -> list[dict]:
        """The fields of ``planned`` entries (key, action, fields, reason[, context]) as a plan
        shows them (see ``record``); ``context``: an update's unchanged content type fields,
        attname → (old, new), for its generic references (``generic_keys``)."""
        wanted: dict[type[models.Model], set] = defaultdict(set)
        for _, action, fields, *_ in planned:
            for name, value in fields.items():
                model = self.shown_references.get(name)
                if model is not None:
                    for v in value if action == "update" else (value,):
                        wanted[model].update(ids_in(v))
        keys = {model: keys_by_pk(model, ids, self.using) for model, ids in wanted.items()}
        generic_keys = self.generic_keys(planned) if self.generic_attnames else {}

        def show(entry: int, name: str, value: Any, side: int, marker: str) -> Any:
            if name in self.secrets and value is not None:
                return marker
            model = self.shown_references.get(name)
            if model is not None:
                return referenced_keys_of(value, keys.get(model, {}))
            # A generic reference to a row a dry run would add (see sync.generic).
            if type(value) is PlaceholderPk:
                return json_key(value.key)
            return generic_keys.get((entry, name, side), value)

        return [
            {
                self.field_name(n): {
                    "old": show(i, n, v[0], 0, SECRET),
                    "new": show(i, n, v[1], 1, CHANGED),
                }
                if action == "update"
                else show(i, n, v, -1, SECRET)
                for n, v in fields.items()
            }
            for i, (_, action, fields, *_) in enumerate(planned)
        ]

    def generic_keys(self, planned: list[tuple]) -> dict[tuple[int, str, int], Any]:
        """(entry, id attname, side: 0 old, 1 new, -1 the value) → the sync key of the row a
        generic reference to an existing row names (a text saying so, when it names none),
        read in one query per content type."""
        slots, ct_ids, raw_ids = [], [], []
        for i, (_, action, fields, _, *context) in enumerate(planned):
            for id_attname, ct_attname in self.generic_attnames:
                if id_attname not in fields:
                    continue
                value = fields[id_attname]
                if action != "update":
                    pairs = [(-1, fields.get(ct_attname), value)]
                else:
                    ct = fields.get(ct_attname) or (context[0].get(ct_attname) if context else None)
                    if ct is None:
                        continue
                    pairs = [(0, ct[0], value[0]), (1, ct[1], value[1])]
                for side, ct_id, raw in pairs:
                    if raw is not None and type(raw) is not PlaceholderPk:
                        slots.append((i, id_attname, side))
                        ct_ids.append(ct_id)
                        raw_ids.append(raw)
        found = generic.referenced_keys(ct_ids, raw_ids, self.using)
        return {
            slot: str(key) if isinstance(key, str) else json_key(key)
            for slot, key in zip(slots, found, strict=True)
        }

    def field_name(self, name: str) -> str:
        f = self.by_attname.get(name)
        return name if f is None else f.name

    def replaced_type(self, key: tuple, ct_attname: str, row: dict | None) -> dict[str, tuple]:
        """{ct attname: (the content type the record's row had before the import,)}: for the
        plan of a generic reference the second pass changes. The first pass may have written
        the new one already (a real run): then its old one was kept (``replaced_types``)."""
        if row is None:
            return {ct_attname: (None,)}
        old = self.replaced_types.get(key, {}).get(ct_attname, row[ct_attname])
        return {ct_attname: (old,)}

    def count(self, decision: Decision, key: tuple, planned: list | None = None) -> None:
        """Count a record that is not written (skipped or unchanged), and plan it."""
        if decision.action == SKIP:
            self.diff.skipped += 1
            self.diff.same_stamp += decision.reason == SAME_STAMP
        else:
            self.diff.unchanged += 1
        if planned is not None:
            planned.append((key, decision.action, {}, decision.reason))
        elif self.importer.recorder is not None:
            self.importer.recorder.record(self.label, json_key(key), decision.action,
                                          reason=decision.reason)  # fmt: skip

    # -- loading ---------------------------------------------------------------------------
    def load(self, records: Iterable[dict | bytes], reporter: JobReporter) -> None:
        """Load the table chunk by chunk: match, decide by stamp (update mode), decode,
        decide by content, stage the writes (see ``sync.matching`` for memory)."""
        matcher = self.matcher
        matcher.start()
        self.stager.reads_back_ids = self.needs_ids and (bool(self.m2m) or not matcher.by_chunk)
        if self.needs_ids:
            index = self.importer.key_index(self.model, bounded=matcher.by_chunk)
            if not matcher.by_chunk:
                index.fill(matcher.found)
        for chunk in chunked(records, CHUNK):
            rows = matcher.match(chunk)
            if self.stamped:
                rows = self.by_stamp(rows)
            parsed = matcher.parsed
            rows = [(key, pk, parsed(record)) for key, pk, record in rows]
            self.importer.prefetch(self, [record for _, _, record in rows])
            if self.generic is not None:
                rows = self.generic.prepare(rows)
            self.decoder.maps = {
                model: self.importer.key_index(model).map for model in self.references
            }
            decode = self.decoder.decode
            decoded = [(key, pk, *decode(key, record)) for key, pk, record in rows]
            if self.importer.mode == "replace":
                self.check_references_kept(decoded)
            self.load_chunk(decoded)
            reporter.advance(len(chunk))
        self.release()

    def by_stamp(self, rows: list[tuple]) -> Iterator[tuple]:
        """Update mode: the (key, id, record) rows whose content ``sync.decide`` needs; the
        others are decided by their ``updated_at`` alone, counted and planned unread."""
        same_stamp_check = self.importer.same_stamp_check
        for key, pk, record, stamps in self.matcher.stamps_of(rows):
            if stamps is None:
                yield key, pk, record
                continue
            order = stamp_order(*stamps)
            if needs_content(order, same_stamp_check):
                yield key, pk, record
            else:  # decided unread
                self.count(decide("update", True, order, False), key)

    def unique_values(self) -> UniqueValues | None:
        """The unique values besides the key this table writes, checked and made room
        for (``sync.uniques``); None when it has none."""
        present = {c.field.name for c in self.columns if not c.deferred}
        groups = unique_groups(self.model, present, self.plan.key_fields)
        if not groups:
            return None
        key_of = key_lookup(self.model, self.using, self.key_paths)
        return UniqueValues(
            self.model, self.using, groups, key_of, self.fail, sync_settings.SYNC_KEY_MAP_LIMIT
        )

    def check_references_kept(self, decoded: list) -> None:
        """Replace mode: no record may refer to a row that the import deletes (a target row
        the archive lacks), or the result would not be the archive: the row would go, and its
        ``on_delete`` could take the record with it. The tables a table refers to have loaded
        before it, so their deleted rows are known; references into the table itself are
        checked when it has loaded (``release``), second-pass ones in ``resolve_deferred``."""
        for model, (names, m2m_names) in self.references.items():
            for name, pks in self.referenced_ids(decoded, names, m2m_names):
                if model is self.model:
                    for pk, key in pks:
                        if pk is not None and type(pk) is not PlaceholderPk:
                            self.own_references.setdefault(pk, (key, name))
                    continue
                deleted = self.importer.deleted_rows(model)
                for pk, key in pks if deleted else ():
                    if pk in deleted:
                        raise self.refers_to_deleted(key, name, model, deleted[pk])

    def referenced_ids(
        self, decoded: list, names: list[str], m2m_names: list[str]
    ) -> Iterator[tuple[str, Iterator[tuple[Any, tuple]]]]:
        """(field name, (target id, referring key) pairs) of a chunk's references."""
        for name in names:
            attname = self.model._meta.get_field(name).attname
            yield name, ((values[attname], key) for key, _, values, _, _ in decoded)
        for name in m2m_names:
            yield name, ((pk, key) for key, _, _, _, m2m in decoded for pk in m2m[name])

    def refers_to_deleted(
        self, key: tuple, name: str, model: type[models.Model], target: tuple
    ) -> ImportFailed:
        shown = SECRET_NOT_SHOWN if is_sensitive(self.model, name) else repr(json_key(target))
        return self.fail(
            key,
            f"field {name!r} refers to {model._meta.label} {shown}, which is not in the "
            f"archive: replace mode would delete it (the archive is inconsistent)",
            name,
        )

    def bounded_references(self) -> list[tuple[type[models.Model], list[str], list[str]]]:
        """(model, reference field names, M2M field names) for each model this table refers
        to whose index is bounded (see KeyIndex): those ids are read a chunk at a time."""
        return [
            (model, names, m2m_names)
            for model, (names, m2m_names) in self.references.items()
            if self.importer.key_index(model).is_bounded()
        ]

    def release(self) -> None:
        """Done with this table: keep only what later steps need, so memory does not add up
        over the tables of a large import."""
        self.check_forward_links()
        if self.importer.mode == "replace":
            # The target's rows that the archive lacks (id → key): deleted at the end.
            self.stale = self.matcher.unmatched()
            for pk in self.own_references.keys() & self.stale.keys():
                key, name = self.own_references[pk]
                raise self.refers_to_deleted(key, name, self.model, self.stale[pk])
            self.own_references = {}
        if self.uniques is not None:
            self.uniques.check_table(self.stale)
        # (the seen keys are kept when references to rows the archive adds are told by them)
        self.matcher.release(keep_keys=self.needs_ids)

    def check_forward_links(self) -> None:
        """Every M2M item that named a row of this table not read yet names one the archive
        holds (its links are written once the table's rows are: ``TableStager.finish``)."""
        for linked, (key, f, raw) in self.forward_links.items():
            if linked not in self.keys_seen or self.importer.generic.is_dropped(self.model, linked):
                secret = is_sensitive(self.model, f.name)
                raise unfound_reference(self.fail, key, f, self.model, raw, secret)
        self.forward_links = {}
        if not self.importer.dry_run:
            self.stager.finish()

    def load_chunk(self, decoded: list) -> None:
        mode = self.importer.mode
        existing = [pk for _, pk, *_ in decoded if pk is not None]
        current = self.current_rows(existing)
        current_m2m = self.current_m2m(existing)
        staged = StagedChunk()
        inserts, updates, new_m2m, m2m_writes = (
            staged.inserts,
            staged.updates,
            staged.new_m2m,
            staged.m2m_writes,
        )
        planned: list | None = None if self.importer.recorder is None else []
        stamped = self.stamped
        for key, pk, values, deferred, m2m in decoded:
            if pk is None:
                self.diff.new += 1
                if planned is not None:
                    planned.append((key, "insert", values | m2m, ""))
                inserts.append(values)
                new_m2m.append((key, m2m))
                if self.importer.moved is not None:
                    self.note_points(key, values)
                for name, target in deferred.items():
                    self.deferred.append((key, None, name, target, "new"))
                continue
            if mode == "append":  # decided without the content
                self.count(decide(mode, True, None, False), key, planned)
                continue
            old = current[pk]
            changed = {
                attname: (old[attname], value)
                for attname, value in values.items()
                if attname not in self.deferred_attnames and old[attname] != value
            }
            m2m_changes = {
                name: (current_m2m[name].get(pk, set()), ids)
                for name, ids in m2m.items()
                if current_m2m[name].get(pk, set()) != ids
            }
            order = (
                stamp_order(values.get("updated_at"), old.get("updated_at")) if stamped else None
            )
            decision = decide(mode, True, order, bool(changed or m2m_changes))
            if decision.action == SKIP or order in (SAME, UNSTAMPED):  # not written
                self.count(decision, key, planned)
                continue
            state = "changed" if changed or m2m_changes else "same"
            for f in self.deferred_fields:
                target = deferred.get(f.name)
                if target is not None or old[f.attname] is not None:
                    self.deferred.append((key, pk, f.name, target, state))
            if state == "same":
                self.diff.unchanged += 1
                if planned is not None:
                    planned.append((key, "unchanged", {}, ""))
                continue
            self.diff.updated += 1
            if planned is not None:
                context = {ct: (old[ct], values[ct]) for _, ct in self.generic_attnames}
                for ct in context.keys() & changed.keys():  # for the second pass's plan
                    self.replaced_types[key][ct] = old[ct]
                planned.append((key, "update", changed | m2m_changes, "", context))
            if changed:
                updates.append(
                    (pk, {a: values[a] for a in values if a not in self.deferred_attnames})
                )
            if self.importer.moved is not None:
                self.note_moves(pk, old, changed, m2m_changes)
            for name, (old_ids, new_ids) in m2m_changes.items():
                m2m_writes[name].append((pk, old_ids, new_ids))
        if planned:
            self.record(planned)
        if self.uniques is not None:
            keys = {pk: key for key, pk, *_ in decoded if pk is not None}
            self.uniques.check_chunk(
                [
                    (key, None, values, None)
                    for (key, _), values in zip(new_m2m, inserts, strict=True)
                ]
                + [(keys[pk], pk, values, current[pk]) for pk, values in updates]
            )
        if not self.importer.dry_run:
            self.stager.stage(staged)

    def note_moves(self, pk: Any, row: dict, changed: dict, m2m_changes: dict) -> None:
        """Dry run in replace mode: the references this row's update moves (see
        ``sync.deletions``)."""
        moved = self.importer.moved
        for attname, (old, new) in changed.items():
            if attname in self.reference_attnames:
                moved.note(self.model, self.by_attname[attname], old, pk)
                moved.point(self.model, self.by_attname[attname], new, pk)
        if self.plan.generic:
            new = {attname: value for attname, (_, value) in changed.items()}
            generic.note_moves(moved, self.model, self.plan, pk, row, new, self.using)
        for name, (old_ids, new_ids) in m2m_changes.items():
            moved.note_links(self.model._meta.get_field(name), pk, old_ids - new_ids)

    def note_points(self, key: tuple, values: dict) -> None:
        """Dry run in replace mode: the references of a row the import adds (see
        ``sync.deletions``)."""
        for attname in self.reference_attnames.keys() & values.keys():
            self.importer.moved.point(self.model, self.by_attname[attname], values[attname], key)

    def current_rows(self, pks: list) -> dict[Any, dict]:
        if not pks:
            return {}
        attnames = [c.field.attname for c in self.columns]
        rows = filter_in(self.model._base_manager.using(self.using), "pk", pks)
        current = {row["pk"]: row for row in rows.values("pk", *attnames)}
        if self.uniques is not None and self.uniques.parked:
            self.uniques.as_before(current)
        return current

    def current_m2m(self, pks: list) -> dict[str, dict[Any, set]]:
        result: dict[str, dict[Any, set]] = {}
        for f in self.m2m:
            through = f.remote_field.through
            source, target = f.m2m_field_name(), f.m2m_reverse_field_name()
            sets: dict[Any, set] = defaultdict(set)
            if pks:
                rows = through._base_manager.using(self.using).filter(**{f"{source}__in": pks})
                for source_pk, target_pk in rows.values_list(f"{source}_id", f"{target}_id"):
                    sets[source_pk].add(target_pk)
            result[f.name] = sets
        return result


class Importer:
    def __init__(
        self,
        source: RecordSource,
        mode: str = "replace",
        using: str = "default",
        dry_run: bool = False,
        tables: Iterable[str] | None = None,
        recorder: PlanRecorder | None = None,
        reporter: JobReporter | None = None,
        verdict: Verdict | None = None,
        drop_unresolved: bool = False,
    ):
        if mode not in MODES:
            raise ImportFailed(f"Unknown mode {mode!r}: use one of {', '.join(MODES)}.")
        self.source = source
        self.mode = mode
        self.using = using
        self.dry_run = dry_run
        self.recorder = recorder  # the plan, when one is written (see sync.plan)
        self.reporter = reporter or JobReporter()
        self.connection = connections[using]
        self.indexes: dict[type[models.Model], KeyIndex] = {}
        self.loaders: dict[str, TableLoader] = {}
        self.loading: TableLoader | None = None
        replaces = mode == "replace" and dry_run
        self.moved = MovedReferences(self.may_be_deleted) if replaces else None
        self.writer = RowWriter(self.connection)
        self.gate = WriteGate(verdict, self.reporter)
        self.datetimes_as_text = reads_datetimes_as_text(self.connection)
        self.same_stamp_check = sync_settings.SYNC_SAME_STAMP_CHECK
        self.source_tables = {t.label: t for t in source.table_list()}
        self.plans = self.check_schema(tables)
        self.needs_ids = {ref.target for p in self.plans for ref in p.references.values()}
        self.needs_ids |= {f.related_model for p in self.plans for f in p.m2m_fields}
        self.needs_ids |= {p.model for p in self.plans if p.m2m_fields or p.deferred}
        self.generic = GenericImport(self, drop_unresolved)
        self.needs_ids |= self.generic.referable

    # -- schema ---------------------------------------------------------------------------
    def check_schema(self, tables: Iterable[str] | None) -> list[SyncModel]:
        """Every table and field of the source must exist here, with the same sync key; each
        field must be one the import writes, and each field it lacks must have a value for
        new rows (see absent_fields)."""
        chosen = list(self.source_tables)
        if tables:
            try:
                wanted = {m._meta.label for m in resolve_tables(tables)}
            except SchemaError as exc:
                raise ImportFailed(str(exc)) from exc
            absent = sorted(wanted - set(chosen))
            if absent:
                raise ImportFailed(f"Table {absent[0]} is not in the archive.")
            chosen = [label for label in chosen if label in wanted]
        found = []
        for label in chosen:
            try:
                model = apps.get_model(label)
            except (LookupError, ValueError) as exc:
                raise ImportFailed(
                    f"Unknown table {label!r} in the archive: no such model is installed here."
                ) from exc
            if model._meta.label != label:  # get_model ignores the case of the model's name
                raise ImportFailed(
                    f"Unknown table {label!r} in the archive: the model here is "
                    f"{model._meta.label} (labels are case-sensitive)."
                )
            table = self.source_tables[label]
            for name in table.fields:
                try:
                    f = model._meta.get_field(name)
                except Exception as exc:
                    raise ImportFailed(
                        f"Unknown field {label}.{name} in the archive: the model here has no "
                        f"such field (is the schema migrated to the same version?)."
                    ) from exc
                if f.name != name:  # get_field also finds a foreign key by its column's name
                    raise ImportFailed(
                        f"Unknown field {label}.{name} in the archive: the model here has no "
                        f"such field ({name!r} is the column of its field {f.name!r})."
                    )
                reason = unwritable(model, f)
                if reason is not None:
                    raise ImportFailed(f"Field {label}.{name} cannot be imported: {reason}.")
            absent_fields(model, table.fields)
            ours = list(sync_key_fields(model))
            if list(table.key_fields) != ours:
                raise ImportFailed(
                    f"{label}: the archive identifies rows by {table.key_fields}, this database "
                    f"by {ours}."
                )
            if problem := generic.archive_mismatch(model, table):
                raise ImportFailed(problem)
            found.append(model)
        try:
            plans = plan_models(found, include_secrets=True)
        except SchemaError as exc:
            raise ImportFailed(str(exc)) from exc
        return plans

    # -- keys -----------------------------------------------------------------------------
    def key_index(self, model: type[models.Model], bounded: bool | None = None) -> KeyIndex:
        if model not in self.indexes:
            self.indexes[model] = KeyIndex(model, self.using, bounded)
        return self.indexes[model]

    def id_of(self, model: type[models.Model], key: tuple) -> Any:
        """The target's id of ``key`` (prefetched, if the index is bounded), or a placeholder
        for a row the archive adds whose id is not known yet; None if there is no such row.

        Placeholders let the import read on while its writes wait for the archive's
        verification (see WriteGate); ``write_chunk`` looks their ids up just before writing,
        when the rows they stand for have been written.
        """
        pk = self.key_index(model).map.get(key)
        if pk is None:
            loader = self.loaders.get(model._meta.label)
            if loader is not None and key in loader.keys_seen:
                return None if self.generic.is_dropped(model, key) else PlaceholderPk(key)
        return pk

    def ids_of_written_rows(self, model: type[models.Model], keys: set[tuple]) -> dict:
        """Key → id of those of ``keys`` whose rows are written by now."""
        index = self.key_index(model)
        index.prefetch(keys)
        return {key: index.map[key] for key in keys if key in index.map}

    def ids_of_new_rows(self, model: type[models.Model], keys: set[tuple]) -> dict:
        """Key → id of rows this import has written (for placeholders, see ``id_of``)."""
        index = self.key_index(model)
        index.prefetch(keys)
        missing = keys - index.map.keys()
        if missing:  # a row referring to one of its own table's new rows, not written yet
            raise ImportFailed(
                f"{model._meta.label} {json_key(min(missing))!r} is referred to before it is "
                f"written; this import cannot order such references."
            )
        return {key: index.map[key] for key in keys}

    def prefetch(self, loader: TableLoader, records: list[dict]) -> None:
        """Read the ids these records refer to in bounded indexes, before they are decoded
        (all of a model's at once: a second read could empty the cache of the first)."""
        wanted: dict[type[models.Model], set] = defaultdict(set)
        for model, names, m2m_names in loader.bounded_references():
            keys = wanted[model]
            keys.update(target_key(r[n]) for r in records for n in names if r.get(n) is not None)
            keys.update(target_key(k) for r in records for n in m2m_names for k in r.get(n) or ())
        if loader.generic is not None:
            for model, keys in loader.generic.wanted(records).items():
                wanted[model] |= keys
        for model, keys in wanted.items():
            self.key_index(model).prefetch(keys)

    def deleted_rows(self, model: type[models.Model]) -> dict[Any, tuple]:
        """Replace mode: id → key of the rows of ``model`` that the import deletes (known
        once its table has loaded; none for a table the import does not load)."""
        loader = self.loaders.get(model._meta.label)
        return {} if loader is None else loader.stale

    def may_be_deleted(self, model: type[models.Model], pk: Any) -> bool:
        """Whether replace mode may delete this row: one the archive lacks, or one of a
        table that is not imported or not loaded yet (an ``on_delete`` may reach it)."""
        loader = self.loaders.get(model._meta.label)
        return loader is None or loader is self.loading or pk in loader.stale

    def resolve(self, target: type[models.Model], raw: Any, loader, key, f) -> Any:
        if type(raw) is not str and mistyped_key(target, raw):
            secret = is_sensitive(loader.model, f.name)
            raise mistyped_reference(loader.fail, key, f, target, raw, secret)
        pk = self.id_of(target, target_key(raw))
        if pk is None:
            secret = is_sensitive(loader.model, f.name)
            raise unfound_reference(loader.fail, key, f, target, raw, secret)
        return pk

    # -- running --------------------------------------------------------------------------
    def run(self) -> ImportResult:
        with rare_collections():
            return self.run_collected()

    def run_collected(self) -> ImportResult:
        try:
            try:
                return self.load_all()
            except JobCancelled:
                raise  # at once: not after the archive's verification has finished
            except BaseException:
                self.gate.raise_if_unverified()  # a damaged archive is reported as such
                raise
        except (ProtectedError, RestrictedError) as exc:
            raise ImportFailed(f"Cannot delete: {exc.args[0]}") from exc
        except IntegrityError as exc:
            message = self.without_secrets(database_error_line(exc))
            raise ImportFailed(f"The database refused the data: {message}") from exc
        except DatabaseError as exc:
            message = self.without_secrets(database_error_line(exc))
            raise ImportFailed(f"Database error during import: {message}") from exc

    def without_secrets(self, message: str) -> str:
        """A database's refusal without the secret it may quote: MySQL's and MariaDB's
        "Duplicate entry '…' for key '…'" quotes the value, a secret's too when its unique key
        holds one (a value the import's own check let pass: one the collation takes as
        another's, ``sync.uniques``). Quoted unless the key is known to hold no secret."""
        match = DUPLICATE_ENTRY.search(message)
        if match is None or not self.may_hold_a_secret(match["key"].rsplit(".", 1)[-1]):
            return message
        return f"{message[: match.start('value')]}{SECRET_NOT_SHOWN}{message[match.end('value') :]}"

    def may_hold_a_secret(self, constraint: str) -> bool:
        """Whether a unique key named ``constraint`` of a loaded table covers a secret."""
        connection = connections[self.using]
        with connection.cursor() as cursor:
            for loader in self.loaders.values():
                opts = loader.model._meta
                secret = {f.column for f in opts.concrete_fields if f.attname in loader.secrets}
                if not secret:
                    continue
                found = connection.introspection.get_constraints(cursor, opts.db_table)
                if secret & set(found.get(constraint, {}).get("columns") or ()):
                    return True
        return False

    def load_all(self) -> ImportResult:
        result = ImportResult(self.mode, self.dry_run, backup_id=self.source.backup_id)
        plans = {p.label: p for p in self.plans}
        total = sum(self.source_tables[label].count for label in plans)
        self.reporter.phase("reading", total=total)
        with strict_session(self.using), transaction.atomic(using=self.using):
            for table, records in self.source.records():
                plan = plans.get(table.label)
                if plan is None:
                    for _ in records:  # not chosen: read through it (checksums still count)
                        pass
                    continue
                self.reporter.table(plan.label)
                loader = TableLoader(self, plan, table)
                self.loaders[plan.label] = loader
                result.tables[plan.label] = loader.diff
                self.loading = loader
                loader.load(records, self.reporter)
                self.loading = None
            self.reporter.table("")
            self.gate.flush()
            self.reporter.phase("resolving references")
            self.resolve_deferred()
            if self.mode == "replace":
                self.reporter.phase("deleting")
                self.delete_missing(result)
            if not self.dry_run:
                for loader in self.loaders.values():
                    if loader.uniques is not None:
                        loader.uniques.check_restored(loader.stale)
                self.writer.reset_sequences()
                self.reporter.phase("committing")
        self.gate.flush()  # a dry run writes nothing, but still waits for the verdict
        return result

    def resolve_deferred(self) -> None:
        """Second pass: references that closed a cycle or point into their own table."""
        for loader in self.loaders.values():
            promoted: set = set()  # keys counted as updated by this pass
            for chunk in chunked(loader.deferred, CHUNK):
                self.reporter.check_cancelled()
                self.resolve_deferred_chunk(loader, chunk, promoted)
            loader.deferred = []

    def resolve_deferred_chunk(self, loader: TableLoader, chunk: list, promoted: set) -> None:
        fields = {name: loader.model._meta.get_field(name) for _, _, name, _, _ in chunk}
        targets: dict[type[models.Model], set] = defaultdict(set)
        targets[loader.model].update(key for key, *_ in chunk)  # one read a model (see prefetch)
        for _, _, name, target, _ in chunk:
            if target is not None:
                model, raw = generic.target_of(fields[name], target)
                targets[model].add(target_key(raw))
        for model, keys in targets.items():
            self.key_index(model).prefetch(keys)
        pks = [self.id_of(loader.model, key) for key, *_ in chunk]
        current = loader.current_rows([pk for pk in pks if not isinstance(pk, PlaceholderPk)])
        updates: dict[Any, dict] = defaultdict(dict)
        amended: dict[tuple, dict] = defaultdict(dict)  # the plan's second-pass fields
        types: dict[tuple, dict] = defaultdict(dict)  # their generic references' content types
        type_of = dict(loader.generic_attnames)
        for pk, (key, _, name, target, state) in zip(pks, chunk, strict=True):
            f = fields[name]
            wanted = None
            if target is not None:
                model, raw = generic.target_of(f, target)
                target_pk = self.resolve(model, raw, loader, key, f)
                deleted = self.deleted_rows(model)
                if target_pk in deleted:
                    raise loader.refers_to_deleted(key, name, model, deleted[target_pk])
                wanted = generic.stored(f, target_pk)
            old = None if state == "new" else current[pk][f.attname]
            if old == wanted:
                continue
            if self.moved is not None:
                self.note_deferred_move(loader, f, pk, key, current.get(pk), wanted)
            updates[pk][f.attname] = wanted
            if state == "same" and key not in promoted:
                promoted.add(key)
                loader.diff.unchanged -= 1
                loader.diff.updated += 1
            if self.recorder is not None:
                amended[key][f.attname] = (old, wanted)
                if f.attname in type_of and target is not None:
                    types[key] |= loader.replaced_type(key, type_of[f.attname], current.get(pk))
                    types[key][type_of[f.attname]] += (content_type_id(model, self.using),)
        if amended:
            planned = [(key, "update", fields, "", types[key]) for key, fields in amended.items()]
            for key, fields in zip(amended, loader.shown(planned), strict=True):
                self.recorder.amend(loader.label, json_key(key), fields)
        if not self.dry_run:
            self.writer.update_rows(loader.table, list(updates.items()))

    def note_deferred_move(
        self, loader: TableLoader, f: models.Field, pk: Any, key: tuple, row: dict | None, new: Any
    ) -> None:
        """Dry run in replace mode: a reference the second pass moves (see sync.deletions)."""
        if f.is_relation:
            if row is not None:
                self.moved.note(loader.model, f, row[f.attname], pk)
            self.moved.point(loader.model, f, new, key if row is None else pk)
        elif row is not None:
            moves = {f.attname: new}
            generic.note_moves(self.moved, loader.model, loader.plan, pk, row, moves, self.using)

    def delete_missing(self, result: ImportResult) -> None:
        """Replace mode: delete rows whose key is not in the archive, following on_delete.

        One Collector gathers every table's stale rows, so a row reached twice (stale itself and
        by cascade) counts once, in a dry run as in a real run (see ``sync.deletions``). A row
        the archive holds must not go with them: that is refused.
        """
        if self.moved is None:
            collector = SilentCollector(using=self.using, origin=None)
        else:
            collector = DryRunCollector(self.using, self.moved)
        stale_loaders = [loader for loader in self.loaders.values() if loader.stale]
        for loader in stale_loaders:
            manager = loader.model._base_manager.using(self.using)
            for chunk in chunked(sorted(loader.stale), CHUNK):
                self.reporter.check_cancelled()
                collector.collect(list(manager.filter(pk__in=chunk)))
                if self.recorder is not None:
                    self.record_deleted(loader.model, chunk, "")
        if not stale_loaders:
            return
        removed = deleted_ids(collector)
        # Rows the import adds that the real run's cascade would take (see sync.deletions).
        taken = {} if self.moved is None else self.moved.taken_records(removed)
        for model in taken.keys() - removed.keys():
            removed[model] = set()
        for model, pks in removed.items():
            loader = self.loaders.get(model._meta.label)
            if loader is None:
                result.cascaded[str(model._meta.verbose_name_plural)] += len(pks)
                continue
            kept = pks - loader.stale.keys()
            if kept:
                raise self.deletes_archived_row(loader, min(kept))
            if taken.get(model):  # rows the import adds: their ids follow the target's
                raise self.deletes_archived_row(loader, key=min(taken[model]))
            loader.diff.deleted = len(pks)
        self.note_generic_references_left(removed)
        self.refuse_changed_records(collector)
        if self.recorder is not None:
            self.record_cascaded(collector)
        if not self.dry_run:
            collector.delete()

    def record_deleted(
        self, model: type[models.Model], pks: list, reason: str, reasons: dict | None = None
    ) -> None:
        """Record the deletion of ``model``'s rows ``pks`` with their values; ``reasons``:
        id → a row's own reason, instead of ``reason``."""
        reasons = reasons or {}
        loader = self.loaders.get(model._meta.label)
        rows = model._base_manager.using(self.using).filter(pk__in=pks)
        if loader is None:  # a table the import does not load: the key alone
            for key, pk in keyed_ids(rows, key_paths(model)):
                why = reasons.get(pk, reason)
                self.recorder.record(model._meta.label, json_key(key), "delete", reason=why)
            return
        current = loader.current_rows(pks)
        keys = dict((pk, key) for key, pk in keyed_ids(rows, loader.key_paths))
        planned = [
            (
                keys[pk],
                "delete",
                {a: v for a, v in current[pk].items() if a != "pk"},
                reasons.get(pk, reason),
            )
            for pk in pks
            if pk in current
        ]
        loader.record(planned)

    def record_cascaded(self, collector: SilentCollector) -> None:
        """Record the rows on_delete rules take with the stale ones, record by record, each
        naming the deleted record that took it (``cascade (on_delete) of app.Model key``)."""
        removed = deleted_ids(collector)
        for model, pks in removed.items():
            loader = self.loaders.get(model._meta.label)
            cascaded = sorted(pks - (loader.stale.keys() if loader else set()))
            for chunk in chunked(cascaded, CHUNK):
                causes = cascade_causes(model, chunk, removed, self.using)
                self.record_deleted(model, chunk, CASCADE, self.cascade_reasons(causes))

    def cascade_reasons(self, causes: dict[Any, tuple[type[models.Model], Any]]) -> dict:
        """Id → ``cascade (on_delete) of app.Model key`` for ``cascade_causes``."""
        wanted: dict[type[models.Model], set] = defaultdict(set)
        for model, pk in causes.values():
            wanted[model].add(pk)
        keys = {model: keys_by_pk(model, pks, self.using) for model, pks in wanted.items()}
        reasons = {}
        for pk, (model, cause) in causes.items():
            key = keys[model].get(cause)
            if key is not None:
                reasons[pk] = f"{CASCADE} of {model._meta.label} {json_key(key)!r}"
        return reasons

    def note_generic_references_left(self, removed: dict[type[models.Model], set]) -> None:
        """A note on each loaded table some of whose deleted rows are still named by generic
        references of a table the import does not load (see ``generic.left_naming``)."""
        left = generic.left_naming(removed, self.loaders.keys(), self.using)
        for (holder, label), count in sorted(left.items()):
            if (loader := self.loaders.get(label)) is not None:
                loader.diff.notes.append(
                    f"{count} {holder} row(s) keep generic references to {label} rows this "
                    f"import deletes: {holder} is not imported, and a generic relation has no "
                    "on_delete"
                )

    def refuse_changed_records(self, collector: SilentCollector) -> None:
        """Replace mode: an ``on_delete`` rule (SET_NULL, SET_DEFAULT, SET(…)) of a row the
        import deletes must not change a record the archive holds: the result would not be
        the archive. Rows the target holds are in the collector's field updates; rows the
        import adds, in a dry run, are told by ``MovedReferences.taken_records``."""
        for (model, f), pks in updated_ids(collector).items():
            loader = self.loaders.get(model._meta.label)
            kept = pks - loader.stale.keys() if loader is not None else set()
            if kept:
                raise self.deletes_archived_row(loader, min(kept), change=f.name)
        if self.moved is not None:
            for model, f, key in self.moved.changed_records(deleted_ids(collector)):
                loader = self.loaders[model._meta.label]
                raise self.deletes_archived_row(loader, key=key, change=f.name)

    def deletes_archived_row(
        self,
        loader: TableLoader,
        pk: Any = None,
        key: tuple | None = None,
        change: str | None = None,
    ) -> ImportFailed:
        """The refusal of a record the archive holds that replace's deletion would take (or,
        with ``change``, whose reference it would change)."""
        if key is None:
            rows = loader.model._base_manager.using(self.using).filter(pk=pk)
            key = next(keyed_ids(rows, loader.key_paths))[0]
        if change is None:
            what = "would delete it: an on_delete rule takes it"
        else:
            what = f"would change its field {change!r}: an on_delete rule empties it"
        return loader.fail(
            key,
            f"is in the archive, but replace mode {what} with a row that the import deletes "
            "(the archive is inconsistent)",
        )


def content_type_id(model: type[models.Model], using: str) -> Any:
    from django.contrib.contenttypes.models import ContentType  # (an installed app's model)

    return ContentType.objects.db_manager(using).get_for_model(model).pk


@contextmanager
def rare_collections(young: int = 50_000) -> Iterator[None]:
    """Run the cyclic garbage collector far less often while a bulk job runs.

    An import allocates millions of short-lived objects (records, values, parameters) and
    hardly any cycles; Python's default (a young collection every 700 allocations, older ones
    rescanning all it tracks, buffered rows included) cost ≈6% of an import's time here.
    """
    before = gc.get_threshold()
    gc.set_threshold(young, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def import_records(source: RecordSource, **options: Any) -> ImportResult:
    """Import ``source`` (options: see Importer); no locking or job records — see
    sync.jobs.imports."""
    return Importer(source, **options).run()
