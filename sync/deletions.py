"""Replace mode's deletions as a dry run must predict them.

Replace mode deletes the target rows the archive lacks at the very end, after every write, so
Django's ``Collector`` (which follows ``on_delete``) sees the references as the archive left
them. A dry run writes nothing: the target still holds the old references, and a collector
reading it would cascade to, set to NULL, or be stopped (PROTECT) by rows that the import
would have pointed elsewhere first. ``MovedReferences`` records those moves while a dry run
reads the archive, and ``DryRunCollector`` leaves the moved rows out, so the dry run's
deletions, cascades and refusals are the real run's.

The other way round, a reference the import adds or moves *to* a row that a cascade deletes
(one of a table the import does not load) meets that row's ``on_delete`` in the real run: a
CASCADE takes the record with it, which ``Importer.delete_missing`` refuses. ``point`` records
those references, ``DryRunCollector`` adds the rows the target holds to what it collects, and
``taken_records`` names the rows the import adds (the target has none to collect).

Generic references moved away from a row being deleted are left out too: a ``GenericRelation``
makes the ``Collector`` cascade through them.

Neither sends model signals: an import writes with plain SQL on every path (inserts and
updates never call ``save()``), so its deletions do not either (``SilentCollector``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any

from django.db import models, transaction
from django.db.models import sql
from django.db.models.deletion import Collector


class SilentCollector(Collector):
    """A ``Collector`` whose deletion sends no model signals (pre_delete, post_delete).

    What it collects, follows and refuses (CASCADE, SET_NULL, PROTECT, RESTRICT…) is
    Django's; only ``delete`` differs: the same statements in the same order as
    ``Collector.delete``, without the signals. Telling the collection there are no listeners
    lets it delete reached rows by query instead of loading them for the signals' sake.
    """

    def _has_signal_listeners(self, model: type[models.Model]) -> bool:
        return False

    def delete(self) -> None:
        self.sort()
        with transaction.atomic(using=self.using, savepoint=False):
            for queryset in self.fast_deletes:
                queryset._raw_delete(using=self.using)
            for (f, value), batches in self.field_updates.items():
                for rows in batches:
                    if isinstance(rows, models.QuerySet) and rows._result_cache is None:
                        rows.update(**{f.name: value})  # an UPDATE statement: no signals
                    else:
                        pks = list({obj.pk for obj in rows})
                        sql.UpdateQuery(type(rows[0])).update_batch(
                            pks, {f.name: value}, self.using
                        )
            for model, instances in self.data.items():
                pks = sorted((obj.pk for obj in instances), reverse=True)  # as Django orders
                sql.DeleteQuery(model).delete_batch(pks, self.using)


class MovedReferences:
    """References a dry run's import would move away from rows that may be deleted.

    A row of a table is known by its id; a link of an M2M relation (a row of its
    auto-created table) by its (source id, target id) pair. Only moves away from a row that
    may be deleted are kept (``may_be_deleted``): the others cannot change a deletion, so
    memory grows with the references the deletion concerns, not with the archive.
    """

    def __init__(self, may_be_deleted: Callable[[type[models.Model], Any], bool]):
        self.may_be_deleted = may_be_deleted
        self.rows: dict[tuple[type[models.Model], str], set[Hashable]] = defaultdict(set)
        self.link_fields: dict[type[models.Model], tuple[str, str]] = {}
        self.generic_rows: dict[type[models.Model], set[Hashable]] = defaultdict(set)
        # (model, foreign key) → id it will refer to → the rows (id, or key of a new row)
        self.pointed: dict[tuple[type[models.Model], models.Field], dict] = defaultdict(
            lambda: defaultdict(list)
        )

    def note(self, model: type[models.Model], f: models.Field, old: Any, row: Hashable) -> None:
        """``row`` of ``model`` will no longer refer to ``old`` through ``f``."""
        if old is not None and self.may_be_deleted(f.related_model, old):
            self.rows[(model, f.attname)].add(row)

    def note_generic(
        self, model: type[models.Model], old: type[models.Model] | None, old_pk: Any, row: Hashable
    ) -> None:
        """``row`` of ``model`` will no longer refer to ``old_pk`` of ``old`` through a generic
        reference (the one a ``GenericRelation`` of ``old`` follows)."""
        if old is not None and old_pk is not None and self.may_be_deleted(old, old_pk):
            self.generic_rows[model].add(row)

    def point(self, model: type[models.Model], f: models.Field, new: Any, row: Hashable) -> None:
        """``row`` of ``model`` (its id, or its key if the import adds it) will refer to
        ``new`` through ``f``: kept if an ``on_delete`` may reach ``new``."""
        if new is not None and self.may_be_deleted(f.related_model, new):
            self.pointed[(model, f)][new].append(row)

    def pointing(self, model: type[models.Model], fields: list, objs: list) -> list:
        """Ids of the rows of ``model`` that will refer to one of ``objs`` through ``fields``
        (rows the target holds; for those the import adds see ``taken_records``)."""
        found = []
        for f in fields:
            targets = self.pointed.get((model, f))
            if targets:
                for obj in objs:
                    rows = targets.get(getattr(obj, f.target_field.attname), ())
                    found += [row for row in rows if not isinstance(row, tuple)]
        return found

    def taken_records(self, removed: dict[type[models.Model], set]) -> dict[type, list]:
        """Model → the keys of rows the import adds whose reference to a row in ``removed``
        would take them with it (CASCADE): the target holds no row to collect for them."""
        taken: dict[type[models.Model], list] = defaultdict(list)
        for (model, f), targets in self.pointed.items():
            if f.remote_field.on_delete is not models.CASCADE:
                continue
            gone = removed.get(f.related_model._meta.concrete_model, set())
            for target in gone & targets.keys() if gone else ():
                if keys := [row for row in targets[target] if isinstance(row, tuple)]:
                    taken[model] += keys
        return taken

    def changed_records(self, removed: dict[type[models.Model], set]) -> list[tuple]:
        """(model, field, key) of rows the import adds whose reference to a row in
        ``removed`` an ``on_delete`` rule would change (SET_NULL, SET_DEFAULT, SET(…))."""
        changed = []
        for (model, f), targets in self.pointed.items():
            gone = removed.get(f.related_model._meta.concrete_model, set())
            if not gone or not changes_row(f.remote_field.on_delete):
                continue
            for target in gone & targets.keys():
                changed += [(model, f, row) for row in targets[target] if isinstance(row, tuple)]
        return sorted(changed, key=lambda found: repr(found[2]))

    def note_links(self, f: models.ManyToManyField, pk: Any, removed: set) -> None:
        """The links from ``pk`` to ``removed`` through the M2M field ``f`` will be gone."""
        through = f.remote_field.through
        source = through._meta.get_field(f.m2m_field_name())
        target = through._meta.get_field(f.m2m_reverse_field_name())
        self.link_fields[through] = (source.attname, target.attname)
        for old in removed:
            self.note(through, target, old, (pk, old))

    def moved(self, model: type[models.Model], attname: str) -> set[Hashable]:
        return self.rows.get((model, attname), set())


def changes_row(on_delete: Callable) -> bool:
    """Whether an ``on_delete`` rule keeps the referring row but changes its reference."""
    return on_delete in (models.SET_NULL, models.SET_DEFAULT) or hasattr(on_delete, "deconstruct")


def updated_ids(collector: Collector) -> dict[tuple[type[models.Model], models.Field], set]:
    """(concrete model, field) → ids of the rows whose ``field`` ``collector`` would change
    (SET_NULL, SET_DEFAULT, SET(...)) before it deletes."""
    updated: dict[tuple[type[models.Model], models.Field], set] = defaultdict(set)
    for (f, _), instances_list in collector.field_updates.items():
        for instances in instances_list:
            if isinstance(instances, models.QuerySet):
                ids = set(instances.values_list("pk", flat=True))
            else:
                ids = {obj.pk for obj in instances}
            updated[(f.model._meta.concrete_model, f)] |= ids
    return updated


class DryRunCollector(SilentCollector):
    """A ``Collector`` that does not see the references a dry run's import would move."""

    def __init__(self, using: str, moved: MovedReferences):
        super().__init__(using=using, origin=None)
        self.moved = moved

    def collect(self, objs, **options):
        # Django collects the rows a GenericRelation reaches with a source and no source_attr
        # (foreign keys' cascades name theirs; it passes them all by name): leave out those
        # the import points elsewhere.
        generic = options.get("source") is not None and options.get("source_attr") is None
        if generic and not options.get("reverse_dependency"):
            gone = self.moved.generic_rows.get(objs.model) if hasattr(objs, "model") else None
            if gone:
                objs = objs.exclude(pk__in=gone)
        return super().collect(objs, **options)

    def related_objects(self, related_model, related_fields, objs):
        queryset = self.without_moved(related_model, related_fields, objs)
        pointed = self.moved.pointing(related_model, related_fields, objs)
        if not pointed:
            return queryset
        # The rows the import points at these: their on_delete applies as in the real run.
        return queryset | related_model._base_manager.using(self.using).filter(pk__in=pointed)

    def without_moved(self, related_model, related_fields, objs):
        queryset = super().related_objects(related_model, related_fields, objs)
        moved = {f.attname: self.moved.moved(related_model, f.attname) for f in related_fields}
        if not any(moved.values()):
            return queryset
        targets = {
            f.attname: {getattr(obj, f.target_field.attname) for obj in objs}
            for f in related_fields
        }
        identity = self.moved.link_fields.get(related_model, ())
        gone = []
        for pk, *values in queryset.values_list("pk", *identity, *targets):
            row = tuple(values[: len(identity)]) if identity else pk
            still = [
                value in targets[attname] and row not in moved[attname]
                for attname, value in zip(targets, values[len(identity) :], strict=True)
            ]
            if not any(still):
                gone.append(pk)
        return queryset.exclude(pk__in=gone) if gone else queryset


def deleted_ids(collector: Collector) -> dict[type[models.Model], set]:
    """Concrete model → ids of its rows that ``collector`` would delete."""
    removed: dict[type[models.Model], set] = defaultdict(set)
    for model, instances in collector.data.items():
        removed[model._meta.concrete_model] |= {obj.pk for obj in instances}
    for queryset in collector.fast_deletes:
        removed[queryset.model._meta.concrete_model] |= set(queryset.values_list("pk", flat=True))
    return removed


def cascade_causes(
    model: type[models.Model], pks: list, removed: dict[type[models.Model], set], using: str
) -> dict[Any, tuple[type[models.Model], Any]]:
    """Id → (model, id) of the deleted row whose ``on_delete`` takes each of ``model``'s rows
    ``pks``: the first foreign key, in field order, that names a row in ``removed``. A row
    taken otherwise (a ``GenericRelation``) has none."""
    references = [
        f
        for f in model._meta.concrete_fields
        if f.many_to_one and f.related_model in removed and f.target_field.primary_key
    ]
    if not references:
        return {}
    causes = {}
    rows = model._base_manager.using(using).filter(pk__in=pks)
    for pk, *targets in rows.values_list("pk", *[f.attname for f in references]):
        for f, target in zip(references, targets, strict=True):
            if target is not None and target in removed[f.related_model]:
                causes[pk] = (f.related_model, target)
                break
    return causes
