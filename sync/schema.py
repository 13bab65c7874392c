"""What the engine knows about models: which ones to sync, how a row is identified across
databases (its *sync key*), in which order tables load, and which references must wait.

Nothing here assumes the content app: any installed model can be synced. A model's sync key is
found from the model itself, so no model needs code of its own:

1. a unique ``xmlid`` field;
2. else the first unique, non-null field other than the primary key (``Tag.name``,
   ``User.sysmail``, ``auth.Group.name``);
3. else the first unconditional unique constraint / ``unique_together`` whose fields are all
   non-null (``Status`` → name + table, ``EventInstructor`` → event + instructor,
   ``auth.Permission`` → content_type + codename);
4. else the primary key.

A field in ``SYNC_SENSITIVE_FIELDS`` is never chosen: a key names its record in every
archive, plan and message. ``SYNC_KEYS`` that names one is refused (``secret_key_fields``).

A key field may be a foreign key; its value is then the target's sync key, so keys nest
(``auth.Permission`` → ``[app_label, model, codename]``). Keys are *flattened* into a tuple of
plain values, and written as a scalar when they have one part, as a list otherwise.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from django.apps import apps
from django.db import models

from sync.conf import sync_settings
from sync.errors import SyncError
from sync.generic import GenericPart, GenericRelation, generic_relations, load_after, waiting_fields


class SchemaError(SyncError):
    """A table, field or model that the engine cannot work with, named for the user."""


@dataclass(frozen=True)
class Reference:
    """A foreign key of a synced model, pointing at another model's sync key."""

    field: models.ForeignKey
    target: type[models.Model]

    @property
    def name(self) -> str:
        return self.field.name


@dataclass
class SyncModel:
    """How one model is written to and read from an archive."""

    model: type[models.Model]
    key_fields: tuple[str, ...]
    include_secrets: bool = False
    # Fields filled in by a second pass: FKs that close a cycle, generic references that wait
    deferred: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        return self.model._meta.label

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @cached_property
    def fields(self) -> list[models.Field]:
        """Concrete fields written to the archive, key fields first."""
        pk = self.model._meta.pk
        chosen = []
        for f in self.model._meta.concrete_fields:
            if isinstance(f, models.GeneratedField):
                continue  # computed by the database; never written
            if f.primary_key and f.name not in self.key_fields:
                continue
            if not self.include_secrets and is_sensitive(self.model, f.name):
                continue
            chosen.append(f)
        chosen.sort(key=lambda f: (f.name not in self.key_fields, f is not pk))
        return chosen

    @cached_property
    def m2m_fields(self) -> list[models.ManyToManyField]:
        """M2M relations stored on this model's records (auto-created through tables only;
        an explicit through model is a table of its own)."""
        return [
            f
            for f in self.model._meta.local_many_to_many
            if f.remote_field.through._meta.auto_created
        ]

    @cached_property
    def references(self) -> dict[str, Reference]:
        return {
            f.name: Reference(f, f.related_model)
            for f in self.fields
            if f.is_relation and (f.many_to_one or f.one_to_one)
        }

    @cached_property
    def generic(self) -> dict[str, GenericRelation]:
        """Generic references written (see sync.generic), by the name of their id field."""
        written = {f.name for f in self.fields}
        return {
            name: relation
            for name, relation in generic_relations(self.model).items()
            if name in written and relation.ct_field in written
        }

    @cached_property
    def key_paths(self) -> list[str | GenericPart]:
        """ORM lookups (and generic parts) that give the flattened sync key of a row."""
        return key_paths(self.model)

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields] + [f.name for f in self.m2m_fields]

    def field_types(self) -> dict[str, str]:
        types = {f.name: f.get_internal_type() for f in self.fields}
        types.update({f.name: "ManyToManyField" for f in self.m2m_fields})
        return types

    def key_of(self, record: dict) -> tuple:
        """The flattened sync key of an archive record."""
        parts: list = []
        for name in self.key_fields:
            value = record[name]  # a generic reference's key is one part (see sync.generic)
            if name in self.references:
                parts.extend(value if isinstance(value, list) else [value])
            else:
                parts.append(value)
        return tuple(parts)


# What a message shows in place of a secret's value (SYNC_SENSITIVE_FIELDS).
SECRET_NOT_SHOWN = "(a secret: not shown)"


def is_sensitive(model: type[models.Model], field_name: str) -> bool:
    name = f"{model._meta.label}.{field_name}"
    patterns = sync_settings.SYNC_SENSITIVE_FIELDS
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _usable(f: models.Field) -> bool:
    return f.concrete and not f.null and not isinstance(f, models.GeneratedField)


def sync_key_fields(model: type[models.Model]) -> tuple[str, ...]:
    """The fields that identify a row of ``model`` in any database (see the module doc)."""
    opts = model._meta
    overrides = sync_settings.SYNC_KEYS
    if opts.label in overrides:
        return tuple(overrides[opts.label])
    try:
        xmlid = opts.get_field("xmlid")
    except Exception:
        xmlid = None
    if xmlid is not None and xmlid.unique and not is_sensitive(model, "xmlid"):
        return ("xmlid",)
    for f in opts.concrete_fields:
        if f.unique and not f.primary_key and _usable(f) and not is_sensitive(model, f.name):
            return (f.name,)
    candidate_sets = [tuple(fields) for fields in opts.unique_together]
    candidate_sets += [
        tuple(c.fields)
        for c in opts.constraints
        if isinstance(c, models.UniqueConstraint) and c.fields and c.condition is None
    ]
    for names in candidate_sets:
        if all(_usable(opts.get_field(name)) for name in names) and not any(
            is_sensitive(model, name) for name in names
        ):
            return names
    return (opts.pk.name,)


def secret_key_fields(model: type[models.Model]) -> list[str]:
    """The fields of ``model``'s sync key that ``SYNC_SENSITIVE_FIELDS`` names (only
    ``SYNC_KEYS`` can choose one): an export without secrets would leave its key out, and one
    with them would show the secret wherever the record is named."""
    return [name for name in sync_key_fields(model) if is_sensitive(model, name)]


def refuse_secret_keys(model: type[models.Model]) -> None:
    secret = secret_key_fields(model)
    if secret:
        raise SchemaError(
            f"{model._meta.label}: its sync key field {secret[0]!r} is in "
            "SYNC_SENSITIVE_FIELDS; a key names its record in every archive, plan and message: "
            "key the model by another field (SYNC_KEYS) or take the field out of "
            "SYNC_SENSITIVE_FIELDS."
        )


def key_paths(model: type[models.Model], prefix: str = "", seen: frozenset = frozenset()) -> list:
    """ORM lookups (``content_type__app_label``…) giving the flattened sync key of ``model``;
    a generic reference in the key is a ``GenericPart`` (its key depends on the row)."""
    if model in seen:
        raise SchemaError(f"{model._meta.label}: its sync key refers back to itself.")
    paths: list = []
    generic = generic_relations(model)
    for name in sync_key_fields(model):
        f = model._meta.get_field(name)
        if name in generic:
            paths.append(GenericPart(f"{prefix}{generic[name].ct_field}", f"{prefix}{name}"))
        elif f.is_relation:
            paths += key_paths(f.related_model, f"{prefix}{name}__", seen | {model})
        else:
            paths.append(f"{prefix}{name}")
    return paths


def syncable_models() -> list[type[models.Model]]:
    return [
        m
        for m in apps.get_models()
        if not m._meta.proxy and m._meta.managed and not m._meta.auto_created
    ]


def resolve_tables(names: Iterable[str]) -> list[type[models.Model]]:
    """Models named by label (``content.Event``), model name (``event``/``events``), database
    table (``content_event``) or app label (every syncable model of that app)."""
    candidates = syncable_models()
    chosen: list[type[models.Model]] = []
    for raw in names:
        name = raw.strip()
        lowered = name.lower()
        matches = [m for m in candidates if m._meta.label_lower == lowered]
        if not matches:
            matches = [m for m in candidates if m._meta.db_table.lower() == lowered]
        if not matches:
            matches = [m for m in candidates if m._meta.app_label == lowered]
        if not matches:
            singular = lowered[:-1] if lowered.endswith("s") else lowered
            matches = [
                m
                for m in candidates
                if m._meta.model_name in (lowered, singular)
                or str(m._meta.verbose_name_plural).lower().replace(" ", "") == lowered
            ]
        if not matches:
            raise SchemaError(
                f"Unknown table {name!r}: name a model label (content.Event), a model name "
                f"(event), a database table (content_event) or an app label (content)."
            )
        if len({m._meta.label for m in matches}) > 1 and lowered not in {
            m._meta.app_label for m in matches
        }:
            labels = ", ".join(sorted(m._meta.label for m in matches))
            raise SchemaError(f"Table name {name!r} is ambiguous: it matches {labels}.")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def default_models() -> list[type[models.Model]]:
    return resolve_tables(sync_settings.SYNC_DEFAULT_APPS)


def with_dependencies(chosen: list[type[models.Model]]) -> list[type[models.Model]]:
    """``chosen`` plus every model they reference, directly or not (FKs and M2M)."""
    result = list(chosen)
    todo = list(chosen)
    while todo:
        model = todo.pop()
        related = [
            f.related_model
            for f in [*model._meta.concrete_fields, *model._meta.local_many_to_many]
            if f.is_relation and f.related_model is not None
        ]
        for target in related:
            if target not in result:
                result.append(target)
                todo.append(target)
    return result


def plan_models(
    chosen: Iterable[type[models.Model]], include_secrets: bool = False
) -> list[SyncModel]:
    """``chosen`` as SyncModels in load order, with cycle-breaking references marked deferred.

    Order is a topological sort on foreign keys between the chosen models. A cycle is broken by
    deferring nullable foreign keys: their rows load with the reference empty and a second pass
    fills it in. A cycle of non-nullable keys cannot be loaded and is an error. Tables with
    generic relations load last, and their references that can wait are deferred too (see
    sync.generic.load_after).
    """
    for model in chosen:
        refuse_secret_keys(model)
    plans = {m: SyncModel(m, sync_key_fields(m), include_secrets) for m in chosen}
    remaining: dict[type[models.Model], dict[str, models.Field]] = {}
    for model, plan in plans.items():
        deps = {}
        for name, ref in plan.references.items():
            if ref.target is model:
                if ref.field.null:
                    plan.deferred.add(name)
                continue
            if ref.target in plans:
                deps[name] = ref.field
        for f in plan.m2m_fields:  # M2M sets are written with the row: targets load first
            if f.related_model in plans and f.related_model is not model:
                deps[f.name] = f
        remaining[model] = deps
        plan.deferred |= waiting_fields(plan)
    load_after(plans, remaining)

    ordered: list[SyncModel] = []
    while remaining:
        ready = sorted(
            (m for m, deps in remaining.items() if not deps), key=lambda m: m._meta.label
        )
        if not ready:
            breakable = [m for m, deps in remaining.items() if all(f.null for f in deps.values())]
            if not breakable:
                labels = ", ".join(sorted(m._meta.label for m in remaining))
                raise SchemaError(f"Cannot order tables: non-nullable reference cycle in {labels}.")
            model = min(breakable, key=lambda m: (len(remaining[m]), m._meta.label))
            # Fields wait for the second pass; an order preference is just given up.
            fields = [n for n, f in remaining[model].items() if isinstance(f, models.Field)]
            plans[model].deferred.update(fields)
            remaining[model] = {}
            ready = [model]
        for model in ready:
            ordered.append(plans[model])
            del remaining[model]
            for deps in remaining.values():
                for name in [n for n, f in deps.items() if f.related_model is model]:
                    del deps[name]
    return ordered
