"""Replace mode's deletions as a dry run must predict them.

Replace mode deletes the target rows the archive lacks at the very end, after every write, so
Django's ``Collector`` (which follows ``on_delete``) sees the references as the archive left
them. A dry run writes nothing: the target still holds the old references, and a collector
reading it would cascade to, set to NULL, or be stopped (PROTECT) by rows that the import
would have pointed elsewhere first. ``MovedReferences`` records those moves while a dry run
reads the archive, and ``DryRunCollector`` leaves the moved rows out, so the dry run's
deletions, cascades and refusals are the real run's.

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

    def note(self, model: type[models.Model], f: models.Field, old: Any, row: Hashable) -> None:
        """``row`` of ``model`` will no longer refer to ``old`` through ``f``."""
        if old is not None and self.may_be_deleted(f.related_model, old):
            self.rows[(model, f.attname)].add(row)

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


class DryRunCollector(SilentCollector):
    """A ``Collector`` that does not see the references a dry run's import would move."""

    def __init__(self, using: str, moved: MovedReferences):
        super().__init__(using=using, origin=None)
        self.moved = moved

    def related_objects(self, related_model, related_fields, objs):
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
