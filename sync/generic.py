"""Generic relations: a content type and an id that together name a row of any model.

Django's ``GenericForeignKey`` (tags, comments, object permissions) keeps the referenced row's
*database id* in a plain column (``object_id``), beside a foreign key to its ``ContentType``.
Tables shaped the same way without declaring one (``admin.LogEntry``) are named in the setting
``SYNC_GENERIC_RELATIONS`` as ``(model label, content type field, id field)``. Copied as it is,
such an id names another row — or none — in a database whose ids differ, so:

- **Export** writes the referenced row's sync key instead, always as an array (its flattened
  key, even of one part): ``"content_type": ["content", "event"], "object_id":
  ["regio0.event__ev_1"]``. The keys are read a chunk at a time, one query per content type
  (``fold``). A reference that names no row (its row deleted, its model gone: legal in Django)
  is written as null where the field allows null — Django reads both as ``None`` — and the
  export reports it; where it does not, the export is refused naming the record
  (``DanglingCheck``).
- **Sync keys** that hold such a field (``Label``: content type + object + name) hold the
  referenced row's key as one part, a tuple (a ``GenericPart`` in ``key_paths``), so records
  and target rows are matched by what they reference, never by ids.
- **Import** resolves each reference through the key index of the model its record's content
  type names, a chunk at a time (``GenericColumns``): rows already in the target, and rows the
  archive adds (placeholders until they are written). The id is stored as its field's type.
- **Load order** depends on data, so it is fixed by a rule instead (``load_after``): tables with
  generic relations load after every other table, and those whose generic reference is in a
  unique constraint (it must be right when the row is written) after those whose reference can
  wait. A reference that can wait is always filled in by the second pass, like the foreign keys
  that close a cycle: the row is written with a stand-in (NULL, else 0 or ""), inside the same
  transaction.
- An **unresolvable** reference (its row neither in the archive nor in the target, its model
  not installed) fails the import naming table, key, field and reference, or with
  ``--drop-unresolved`` leaves the record out and reports it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Container, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import connections, models

from sync.conf import sync_settings
from sync.errors import SyncError
from sync.fieldtypes import INTEGER_FIELDS, TEXT_FIELDS

if TYPE_CHECKING:
    from sync.importer import Importer, TableLoader
    from sync.schema import SyncModel
    from sync.sources import SourceTable

# Keys that hold generic references whose keys hold generic references…: deeper than this is
# taken for a cycle (a label on a label on the first label) and the key cannot be formed.
MAX_NESTING = 8


# -- what a generic relation is ------------------------------------------------------------


@dataclass(frozen=True)
class GenericRelation:
    """A foreign key to ``ContentType`` and the field holding the id of the row it names."""

    ct_field: str
    id_field: str


def generic_relations(model: type[models.Model]) -> dict[str, GenericRelation]:
    """A model's generic relations by id field: its ``GenericForeignKey``s and those
    ``SYNC_GENERIC_RELATIONS`` names for it."""
    found = {}
    if apps.is_installed("django.contrib.contenttypes"):
        # Imported here: the module defines a model, and the app may not be installed.
        from django.contrib.contenttypes.fields import GenericForeignKey

        for f in model._meta.private_fields:
            if isinstance(f, GenericForeignKey):
                found[f.fk_field] = GenericRelation(f.ct_field, f.fk_field)
    label = model._meta.label_lower
    for entry in sync_settings.SYNC_GENERIC_RELATIONS:
        if _well_formed(entry) and entry[0].lower() == label:  # else: see setting_problems
            found[entry[2]] = GenericRelation(entry[1], entry[2])
    return found


def left_naming(
    removed: dict[type[models.Model], set], loaded: Container[str], using: str
) -> Counter:
    """Rows of tables an import does not load whose generic reference names a row it deletes
    (``removed``: model → ids): (their table's label, the deleted row's label) → how many.

    They stay as they are, naming no row: a generic relation has no ``on_delete``. Rows the
    deletion takes itself (a ``GenericRelation`` cascades) are not counted."""
    found: Counter = Counter()
    removed = {model: pks for model, pks in removed.items() if pks}
    if not removed or not apps.is_installed("django.contrib.contenttypes"):
        return found
    from django.contrib.contenttypes.models import ContentType  # see generic_relations

    from sync.keys import CHUNK, chunked  # keys imports this module

    types = ContentType.objects.using(using)
    type_ids = {
        model: types.filter(app_label=model._meta.app_label, model=model._meta.model_name)
        .values_list("pk", flat=True)
        .first()
        for model in removed
    }
    tables = set(connections[using].introspection.table_names())
    for holder in apps.get_models():
        if holder._meta.label in loaded or holder._meta.db_table not in tables:
            continue
        rows, gone = holder._base_manager.using(using), removed.get(holder, set())
        for relation in generic_relations(holder).values():
            id_field = holder._meta.get_field(relation.id_field)
            for model, pks in removed.items():
                if type_ids[model] is None:  # no content type: nothing can name its rows
                    continue
                for chunk in chunked(sorted(pks), CHUNK):
                    named = rows.filter(
                        **{
                            relation.ct_field: type_ids[model],
                            f"{relation.id_field}__in": [stored(id_field, pk) for pk in chunk],
                        }
                    ).values_list("pk", flat=True)
                    found[holder._meta.label, model._meta.label] += len(set(named) - gone)
    return +found  # without the zeros


def _well_formed(entry: Any) -> bool:
    return (
        isinstance(entry, list | tuple)
        and len(entry) == 3
        and all(isinstance(part, str) for part in entry)
    )


def setting_problems() -> list[str]:
    """What is wrong with ``SYNC_GENERIC_RELATIONS`` (for the system check)."""
    problems = []
    for entry in sync_settings.SYNC_GENERIC_RELATIONS:
        if not _well_formed(entry):
            problems.append(f"{entry!r} is not a (model label, content type field, id field).")
            continue
        label, ct_field, id_field = entry
        try:
            model = apps.get_model(label)
            ct = model._meta.get_field(ct_field)
            target = model._meta.get_field(id_field)
        except (LookupError, ValueError, FieldDoesNotExist) as exc:
            problems.append(f"{entry!r}: {exc}")
            continue
        if not (ct.many_to_one and ct.related_model._meta.label == "contenttypes.ContentType"):
            problems.append(f"{entry!r}: {label}.{ct_field} is not a foreign key to ContentType.")
        elif target.is_relation or target.get_internal_type() not in INTEGER_FIELDS | TEXT_FIELDS:
            problems.append(f"{entry!r}: {label}.{id_field} is not an integer or text field.")
    return problems


def waiting_fields(plan: SyncModel) -> set[str]:
    """The generic references of ``plan`` that the second pass fills in: those that may hold a
    stand-in until then — not in the sync key, and NULL (never equal to another) or in no
    unique constraint."""
    waiting = set()
    for name in plan.generic:
        f = plan.model._meta.get_field(name)
        if name in plan.key_fields:
            continue
        if f.null or (not _in_unique_constraint(plan.model, f) and stand_in(f) is not None):
            waiting.add(name)
    return waiting


def _in_unique_constraint(model: type[models.Model], f: models.Field) -> bool:
    opts = model._meta
    sets = [*opts.unique_together]
    sets += [c.fields for c in opts.constraints if isinstance(c, models.UniqueConstraint)]
    return f.unique or any(f.name in names for names in sets)


def stand_in(f: models.Field) -> Any:
    """What a waiting reference holds until the second pass: NULL, else an empty value."""
    if f.null:
        return None
    kind = f.get_internal_type()
    return 0 if kind in INTEGER_FIELDS else "" if kind in TEXT_FIELDS else None


# -- load order -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadsAfter:
    """An order preference in ``plan_models``' dependencies, standing beside foreign keys: not a
    field, so a cycle is broken by dropping it (``null``), never by deferring it."""

    related_model: type[models.Model]
    null: bool = True


def load_after(plans: dict[type[models.Model], SyncModel], deps: dict[type, dict]) -> None:
    """Add to ``deps`` (model → name → field or preference) that tables with generic relations
    load after every other chosen table, and those whose references cannot wait (see
    ``waiting_fields``) after those whose references can — where no foreign key orders them the
    other way (such a preference would close a cycle)."""

    def rank(plan: SyncModel) -> int:
        if not plan.generic:
            return 0
        return 1 if waiting_fields(plan) == set(plan.generic) else 2

    ranks = {model: rank(plan) for model, plan in plans.items()}
    ordered = sorted(plans, key=lambda m: m._meta.label)
    for model in ordered:
        for other in ordered:
            if ranks[other] < ranks[model] and not _reaches(other, model, deps):
                deps[model][f"<after {other._meta.label}>"] = LoadsAfter(other)


def _reaches(start: type, goal: type, deps: dict[type, dict]) -> bool:
    """Whether ``start`` depends on ``goal``, directly or not."""
    todo, seen = [start], {start}
    while todo:
        for f in deps.get(todo.pop(), {}).values():
            if f.related_model is goal:
                return True
            if f.related_model not in seen:
                seen.add(f.related_model)
                todo.append(f.related_model)
    return False


# -- keys of referenced rows (export; target rows' keys on import) ----------------------------


@dataclass(frozen=True)
class GenericPart:
    """A sync-key part that is a generic reference. No ORM lookup reads it: it is read as two
    columns, the content type's id and the raw id, and ``fold`` makes them the referenced rows'
    keys (tuples)."""

    content_type: str
    object_id: str


class Dangling(str):
    """A generic reference that names no row, in place of the row's key: shown as what it
    named and why, and equal to nothing but itself, so a key holding one matches no record."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other

    __hash__ = str.__hash__


def has_generic_part(paths: Iterable) -> bool:
    return any(type(path) is GenericPart for path in paths)


def lookups(paths: list) -> list:
    """``paths`` as ``values_list`` takes them: a GenericPart as its two columns."""
    if not has_generic_part(paths):
        return paths
    expanded = []
    for path in paths:
        if type(path) is GenericPart:
            expanded += [path.content_type, path.object_id]
        else:
            expanded.append(path)
    return expanded


def fold(paths: list, columns: list[list], using: str, depth: int = 0) -> list[list]:
    """Columns read with ``lookups(paths)`` as one column per path: a GenericPart's two become
    the referenced rows' keys (a ``Dangling`` where there is no such row)."""
    if not has_generic_part(paths):
        return columns
    folded, position = [], 0
    for path in paths:
        if type(path) is GenericPart:
            ct_ids, raw_ids = columns[position], columns[position + 1]
            folded.append(referenced_keys(ct_ids, raw_ids, using, depth))
            position += 2
        else:
            folded.append(columns[position])
            position += 1
    return folded


def referenced_keys(ct_ids: list, raw_ids: list, using: str, depth: int = 0) -> list:
    """The sync key (a tuple) of the row each (content type id, raw id) names; None where the
    id is None. One query per content type."""
    keys: list = [None] * len(raw_ids)
    by_type: dict[Any, list[int]] = defaultdict(list)
    for position, (ct_id, raw) in enumerate(zip(ct_ids, raw_ids, strict=True)):
        if raw is not None:
            by_type[ct_id].append(position)
    if not by_type:
        return keys
    types = _content_types({ct_id for ct_id in by_type if ct_id is not None}, using)
    for ct_id, positions in by_type.items():
        label, model = types.get(
            ct_id, ("a row" if ct_id is None else f"content type {ct_id}", None)
        )
        if model is None or depth >= MAX_NESTING:
            reason = _unreadable(ct_id, model)
            for position in positions:
                keys[position] = Dangling(f"{label} id {raw_ids[position]!r}, {reason}")
            continue
        pks = {position: _as_pk(model, raw_ids[position]) for position in positions}
        found = keys_by_pk(model, {pk for pk in pks.values() if pk is not None}, using, depth + 1)
        for position, pk in pks.items():
            key = found.get(pk)
            if key is None:
                key = Dangling(f"{label} id {raw_ids[position]!r}, which does not exist")
            keys[position] = key
    return keys


def _unreadable(ct_id: Any, model: type[models.Model] | None) -> str:
    if ct_id is None:
        return "with no content type"
    if model is None:
        return "a model that is not installed (or a content type that does not exist)"
    return f"nested in generic references more than {MAX_NESTING} deep (a cycle?)"


def _content_types(ct_ids: set, using: str) -> dict[Any, tuple[str, type[models.Model] | None]]:
    """Content type id → (model label, installed model or None), in one query."""
    from django.contrib.contenttypes.models import ContentType

    found = {}
    rows = ContentType._base_manager.using(using).filter(pk__in=ct_ids)
    for pk, app_label, model_name in rows.values_list("pk", "app_label", "model"):
        model = model_named([app_label, model_name])
        found[pk] = (model._meta.label if model else f"{app_label}.{model_name}", model)
    return found


def model_named(ct_key: Any) -> type[models.Model] | None:
    """The installed model a content type key (``[app_label, model]``) names, or None."""
    if not (isinstance(ct_key, list | tuple) and len(ct_key) == 2):
        return None
    if not all(isinstance(part, str) for part in ct_key):
        return None
    try:
        return apps.get_model(*ct_key)._meta.concrete_model
    except (LookupError, ValueError):
        return None


def _as_pk(model: type[models.Model], raw: Any) -> Any:
    """A raw id as the model's primary key value; None when it cannot be one."""
    try:
        return model._meta.pk.to_python(raw)
    except (ValidationError, ValueError, TypeError):
        return None


def note_moves(
    moved: Any, model: type[models.Model], plan: Any, pk: Any, old: dict, new: dict, using: str
) -> None:
    """Dry run in replace mode: the generic references of row ``pk`` that ``new`` (attname →
    value; those it lacks keep ``old``'s) moves away from a row that may be deleted (see
    ``sync.deletions``: a GenericRelation cascades through them)."""
    from django.contrib.contenttypes.models import ContentType

    for id_field, relation in plan.generic.items():
        ct_attname = model._meta.get_field(relation.ct_field).attname
        id_attname = model._meta.get_field(id_field).attname
        before = old[ct_attname], old[id_attname]
        if before == (new.get(ct_attname, before[0]), new.get(id_attname, before[1])):
            continue
        if before[0] is None or before[1] is None:
            continue
        target = ContentType.objects.db_manager(using).get_for_id(before[0]).model_class()
        if target is not None:
            moved.note_generic(model, target, _as_pk(target, before[1]), pk)


def keys_by_pk(model: type[models.Model], pks: set, using: str, depth: int = 0) -> dict:
    """Id → sync key of ``model``'s rows with these ids, read a chunk at a time."""
    # Imported here: schema and keys import this module.
    from sync.keys import CHUNK, chunked, filter_in, keyed_ids
    from sync.schema import key_paths

    paths = key_paths(model)
    rows = model._base_manager.using(using)
    found = {}
    for chunk in chunked(pks, CHUNK):
        found.update((pk, key) for key, pk in keyed_ids(filter_in(rows, "pk", chunk), paths, depth))
    return found


# -- export: references that name no row ----------------------------------------------------


class DanglingReference(SyncError):
    """A record whose generic reference names no row; its key, field and what it named."""

    def __init__(self, table: str, key: Any, field_name: str, reference: str):
        super().__init__(
            f"{table} {key!r}: field {field_name!r} refers to {reference}",
            table=table,
            key=key,
            field=field_name,
        )
        self.reference = reference


@dataclass
class NulledReferences:
    """Dangling generic references an export wrote as null: how many, and the first few."""

    count: int = 0
    examples: list[DanglingReference] = field(default_factory=list)

    def add(self, reference: DanglingReference) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(reference)


class DanglingCheck:
    """Finds references that name no row in a chunk of an export's record columns: a table's
    own generic references, and foreign keys and M2M lists whose target's key holds one."""

    def __init__(self, plan: SyncModel, names: list[str], columns: list[tuple[int, str, bool]]):
        self.plan = plan
        self.names = names
        self.columns = columns  # (position, field name, whether a dangling value may be null)

    @classmethod
    def of(cls, plan: SyncModel, names: list[str]) -> DanglingCheck | None:
        from sync.schema import key_paths  # schema imports this module

        nullable = {
            name
            for name in plan.generic
            if name not in plan.key_fields and plan.model._meta.get_field(name).null
        }
        targets = {name: ref.target for name, ref in plan.references.items()}
        targets |= {f.name: f.related_model for f in plan.m2m_fields}
        checked = set(plan.generic)
        checked |= {name for name, model in targets.items() if has_generic_part(key_paths(model))}
        columns = [(names.index(n), n, n in nullable) for n in names if n in checked]
        return cls(plan, names, columns) if columns else None

    def apply(self, values: list[list], nulled: NulledReferences) -> None:
        """Write a dangling reference of a nullable field as null (counted in ``nulled``);
        raise DanglingReference for any other."""
        for position, name, may_be_null in self.columns:
            column = values[position]
            for row, value in enumerate(column):
                dangling = _dangling_in(value)
                if dangling is None:
                    continue
                key = self.key_at(values, row)
                reference = DanglingReference(self.plan.label, key, name, dangling)
                if not (may_be_null and dangling is value):  # not a key nested in a reference
                    raise reference
                column[row] = None
                nulled.add(reference)

    def key_at(self, values: list[list], row: int) -> Any:
        from sync.records import json_key  # records imports this module

        record = {name: values[self.names.index(name)][row] for name in self.plan.key_fields}
        return json_key(self.plan.key_of(record))


def _dangling_in(value: Any) -> Dangling | None:
    if type(value) is Dangling:
        return value
    if type(value) is tuple or type(value) is list:
        for part in value:
            if (found := _dangling_in(part)) is not None:
                return found
    return None


# -- import ------------------------------------------------------------------------------------


def archive_mismatch(model: type[models.Model], table: SourceTable) -> str | None:
    """Why an archive's table holds its generic references differently from how this database
    reads them (None: the same way, or a source that does not say)."""
    if table.generic is None:
        return None
    label = model._meta.label
    ours = {
        name: relation.ct_field
        for name, relation in generic_relations(model).items()
        if name in table.fields and relation.ct_field in table.fields
    }
    for name in sorted(ours.keys() | table.generic.keys()):
        theirs = table.generic.get(name)
        if theirs is None:
            return (
                f"{label}.{name} is a generic reference here, but the archive holds it as a plain "
                f"value (a database id, as archives written before generic references were "
                f"written as keys): ids name other rows here. Export it again with this version."
            )
        if name not in ours:
            return (
                f"{label}.{name}: the archive holds it as a generic reference (a key), but this "
                f"database does not know it as one (declare a GenericForeignKey, or name it in "
                f"SYNC_GENERIC_RELATIONS)."
            )
        if ours[name] != theirs:
            return (
                f"{label}.{name}: the archive pairs this generic reference with field "
                f"{theirs!r}, this database with {ours[name]!r}."
            )
    return None


@dataclass(frozen=True)
class GenericTarget:
    """A generic reference waiting for the second pass: the model its content type names and
    its key as written."""

    model: type[models.Model]
    raw: Any


def target_of(f: models.Field, target: Any) -> tuple[type[models.Model], Any]:
    """The model and key a reference waiting for the second pass names (a foreign key names
    its field's model)."""
    if type(target) is GenericTarget:
        return target.model, target.raw
    return f.related_model, target


def stored(f: models.Field, pk: Any) -> Any:
    """What field ``f`` holds for the row with id ``pk``: the id for a foreign key; for a
    generic reference the id as its field's type (text or integer; see ``_fits``)."""
    from sync.keys import PlaceholderPk  # keys imports this module

    if f.is_relation or isinstance(pk, PlaceholderPk):
        return pk
    return f.to_python(pk)


def _fits(f: models.Field, model: type[models.Model]) -> bool:
    """Whether every id of ``model`` can be stored in ``f`` as it is (an integer field takes
    integer ids; a text field any id its length allows)."""
    pk = model._meta.pk
    pk_field = pk.target_field if pk.is_relation else pk
    kind = pk_field.get_internal_type()
    if f.get_internal_type() in INTEGER_FIELDS:
        return kind in INTEGER_FIELDS
    room = f.max_length or float("inf")
    if kind in INTEGER_FIELDS:
        return room >= 20
    if kind == "UUIDField":
        return room >= 36
    return kind in TEXT_FIELDS and (pk_field.max_length or float("inf")) <= room


class GenericImport:
    """An import's generic references across its tables: where each table loads, which
    records ``--drop-unresolved`` left out."""

    def __init__(self, importer: Importer, drop_unresolved: bool):
        self.drop_unresolved = drop_unresolved
        labels = {plan.label for plan in importer.plans}
        order = [label for label in importer.source_tables if label in labels]
        self.position = {label: n for n, label in enumerate(order)}
        self.dropped: dict[type[models.Model], Any] = {}  # model → SeenKeys
        # The models whose new rows' ids generic references may need: any chosen one, when a
        # chosen table has generic relations (which rows they name is data).
        generic = any(plan.generic for plan in importer.plans)
        self.referable = {plan.model for plan in importer.plans} if generic else set()

    def loads_here_or_later(self, model: type[models.Model], loader: TableLoader) -> bool:
        position = self.position.get(model._meta.label)
        return position is not None and position >= self.position[loader.label]

    def drop(self, model: type[models.Model], key: tuple) -> None:
        from sync.keys import SeenKeys  # keys imports this module

        if model not in self.dropped:
            self.dropped[model] = SeenKeys(sync_settings.SYNC_KEY_MAP_LIMIT)
        self.dropped[model].add_new([key])

    def is_dropped(self, model: type[models.Model], key: tuple) -> bool:
        seen = self.dropped.get(model)
        return seen is not None and key in seen


@dataclass(frozen=True)
class _Field:
    field: models.Field
    ct_field: str
    waits: bool  # filled in by the second pass (see waiting_fields)


class Unresolved(SyncError):
    """A generic reference that names no row; ``droppable``: --drop-unresolved may leave its
    record out (not when its row may just not be read yet)."""

    def __init__(self, message: str, droppable: bool = True):
        super().__init__(message)
        self.droppable = droppable


_NOT_BEFORE = (
    "which is not in the target database nor among the records loaded before it (a generic "
    "reference in a unique constraint can only name rows loaded before its own)"
)
_WRITTEN_WITH_IT = (
    "which this import adds among the records written with it (a generic reference in a "
    "unique constraint can only name rows written before its own)"
)


class GenericColumns:
    """The generic references of one table being imported: each resolved through the key index
    of the model its record's content type names (``prepare``, a chunk at a time, before the
    chunk is decoded), and stored as its field's type (``apply``, ``realise``)."""

    def __init__(self, loader: TableLoader, fields: list[_Field]):
        self.loader = loader
        self.importer = loader.importer
        self.state: GenericImport = loader.importer.generic
        self.fields = fields
        self.resolved: dict[int, dict[str, Any]] = {}  # id(record) → field name → value
        names = {f.field.name for f in fields}
        for column in loader.columns:
            if column.field.name in names:  # holds a key, not a value of the field's type
                column.decode = _reference_shape

    @classmethod
    def of(cls, loader: TableLoader) -> GenericColumns | None:
        """The table's generic columns, or None when it has none."""
        waiting = loader.plan.deferred
        present = {column.field.name for column in loader.columns}
        fields = [
            _Field(loader.model._meta.get_field(name), relation.ct_field, name in waiting)
            for name, relation in loader.plan.generic.items()
            if name in present
        ]
        return cls(loader, fields) if fields else None

    def prepare(self, rows: list[tuple]) -> list[tuple]:
        """Resolve the generic references of a chunk's (key, id, record) rows, whose ids the
        importer has read (``wanted``). Records whose reference names no row fail the import
        or, with --drop-unresolved, are left out."""
        self.resolved = {}
        adding = {key for key, pk, _ in rows if pk is None}
        kept = []
        for row in rows:
            key, _, record = row
            try:
                self.resolved[id(record)] = self.resolve_record(key, record, adding)
            except Unresolved as exc:
                if not (self.state.drop_unresolved and exc.droppable):
                    raise self.loader.fail(key, str(exc)) from None
                self.state.drop(self.loader.model, key)
                self.loader.diff.drop(key, str(exc), self.importer.recorder)
                continue
            kept.append(row)
        return kept

    def wanted(self, records: list[dict]) -> dict[type[models.Model], set]:
        """The keys these records' generic references name, by model (the importer reads
        their ids before the chunk is decoded, a query per model)."""
        from sync.keys import target_key  # keys imports this module

        keys: dict[type[models.Model], set] = defaultdict(set)
        for record in records:
            for f in self.fields:
                raw = record.get(f.field.name)
                model = model_named(record.get(f.ct_field))
                if model is not None and type(raw) is list:
                    with suppress(TypeError):  # not hashable: refused by resolve_record
                        key = target_key(raw)
                        if self.loader.stores_nul or not _holds_nul(key):  # (refused too)
                            keys[model].add(key)
        return keys

    def resolve_record(self, key: tuple, record: dict, adding: set[tuple]) -> dict[str, Any]:
        """Field name → what a record's generic reference resolves to: the id (as the field's
        type) or a placeholder for it, or a GenericTarget for the second pass. Unresolved when
        it names no row, or a row it cannot be written after; ``adding``: keys of the new rows
        written with this record."""
        resolved = {}
        for f in self.fields:
            raw = record.get(f.field.name)
            if raw is None:
                continue
            model, target, pk = self.resolve(record, f, raw, adding)
            if f.waits:
                resolved[f.field.name] = GenericTarget(model, raw)
                continue
            if self.importer.mode == "replace":
                self.refuse_deleted(key, f, model, pk)
            resolved[f.field.name] = self.stored(f, model, target, pk)
        return resolved

    def resolve(
        self, record: dict, f: _Field, raw: Any, adding: set[tuple]
    ) -> tuple[type[models.Model], tuple, Any]:
        """The model, key and id (or placeholder; None for a waiting reference whose row may
        come later) of the row a reference names."""
        model, key = self.reference(record, f, raw)
        pk = self.importer.id_of(model, key)
        if pk is None and self.state.is_dropped(model, key):
            raise Unresolved(self.missing(f, model, raw, "which this import dropped"))
        later = self.state.loads_here_or_later(model, self.loader)
        if pk is None and not (f.waits and later):
            # (its row may yet come, later, but this reference cannot wait for it)
            why = _NOT_BEFORE if later else ""
            raise Unresolved(self.missing(f, model, raw, why), droppable=not later)
        if not f.waits and model is self.loader.model and key in adding:
            # written in the same statement as this record
            raise Unresolved(self.missing(f, model, raw, _WRITTEN_WITH_IT), droppable=False)
        return model, key, pk

    def refuse_deleted(self, key: tuple, f: _Field, model: type[models.Model], pk: Any) -> None:
        """Replace mode: a reference to a row the import deletes is refused, as a foreign key
        is (``TableLoader.check_references_kept``; its own table's rows are checked when the
        table has loaded, waiting references in the second pass)."""
        from sync.keys import PlaceholderPk  # keys imports this module

        if isinstance(pk, PlaceholderPk):  # a row the archive adds
            return
        if model is self.loader.model:
            self.loader.own_references.setdefault(pk, (key, f.field.name))
            return
        deleted = self.importer.deleted_rows(model)
        if pk in deleted:
            raise self.loader.refers_to_deleted(key, f.field.name, model, deleted[pk])

    def reference(self, record: dict, f: _Field, raw: Any) -> tuple[type[models.Model], tuple]:
        """The model and key a reference names (Unresolved when it names none here)."""
        from sync.keys import target_key  # keys imports this module

        name = f.field.name
        ct_key = record.get(f.ct_field)
        if ct_key is None:
            raise Unresolved(f"field {name!r} holds a reference, but {f.ct_field!r} is empty")
        model = model_named(ct_key)
        if model is None:
            raise Unresolved(
                f"field {name!r} refers to a row of {_shown(ct_key)}, a model not installed here"
            )
        try:
            key = target_key(raw)
            hash(key)
        except TypeError:
            raise Unresolved(
                f"field {name!r} must hold a key (an array of values), not {_shown(raw)}",
                droppable=False,
            ) from None
        if not self.loader.stores_nul and _holds_nul(key):  # no such key here; not looked up
            raise Unresolved(
                f"field {name!r} refers to {model._meta.label} {_shown(raw)}, a key with a NUL "
                f"character, which PostgreSQL cannot store in text",
                droppable=False,
            )
        if not _fits(f.field, model):
            raise Unresolved(
                f"field {name!r} refers to {model._meta.label} {_shown(raw)}, whose ids field "
                f"{name!r} cannot hold"
            )
        return model, key

    def missing(self, f: _Field, model: type[models.Model], raw: Any, why: str = "") -> str:
        from sync.schema import SECRET_NOT_SHOWN, is_sensitive  # schema imports this module

        why = why or "which is neither in the archive nor in the target database"
        secret = is_sensitive(self.loader.model, f.field.name)
        shown = SECRET_NOT_SHOWN if secret else _shown(raw)
        return f"field {f.field.name!r} refers to {model._meta.label} {shown}, {why}"

    def stored(self, f: _Field, model: type[models.Model], key: tuple, pk: Any) -> Any:
        from sync.keys import PlaceholderPk  # keys imports this module

        if isinstance(pk, PlaceholderPk):  # the model varies by record: it travels with it
            return PlaceholderPk(pk.key, model)
        return stored(f.field, pk)

    def apply(self, record: dict, values: dict[str, Any], deferred: dict[str, Any]) -> None:
        """Put a decoded record's resolved references in place (see ``prepare``): waiting ones
        as a stand-in in ``values`` and their target in ``deferred``."""
        resolved = self.resolved.pop(id(record), {})
        for f in self.fields:
            value = resolved.get(f.field.name)
            if type(value) is GenericTarget:
                deferred[f.field.name] = value
                value = stand_in(f.field)
            values[f.field.attname] = value

    def realise(self, rows: list[dict]) -> None:
        """Replace placeholders in rows about to be written by the ids of the rows they stand
        for, written by now (writes run in order), as their fields' type."""
        from sync.keys import PlaceholderPk  # keys imports this module

        for f in self.fields:
            attname = f.field.attname
            wanted: dict[type[models.Model], set] = defaultdict(set)
            for row in rows:
                if type(value := row.get(attname)) is PlaceholderPk:
                    wanted[value.model].add(value.key)
            ids = {model: self.importer.ids_of_new_rows(model, ks) for model, ks in wanted.items()}
            for row in rows:
                if type(value := row.get(attname)) is PlaceholderPk:
                    row[attname] = stored(f.field, ids[value.model][value.key])


def _reference_shape(value: Any) -> Any:
    """The decoder of a generic reference column: a key is an array (see ``prepare``)."""
    if value is not None and type(value) is not list:
        kind = type(value).__name__
        raise ValidationError(f"expected an array (the referenced record's key), got {kind}")
    return value


def _holds_nul(key: tuple) -> bool:
    return any(
        (type(part) is str and "\x00" in part) or (type(part) is tuple and _holds_nul(part))
        for part in key
    )


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened: a hostile archive's key may be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def index_entry(plan: SyncModel) -> dict:
    """What a table's index entry says of its generic references: id field → content type
    field (nothing when it has none, so other tables' entries stay as they were)."""
    if not plan.generic:
        return {}
    return {"generic_references": {name: r.ct_field for name, r in plan.generic.items()}}
