"""Unique values besides the sync key, when an import moves them between rows.

A unique field other than the key (``Seat.number``, ``Seat.nickname``) may hold, in the
archive, a value that another target row holds now: two records swap their numbers, a record
takes a nickname from a row that replace mode deletes, numbers shift by one. Written row by
row, the first such write is refused by the database although the result is valid. Two parts:

- The check (``UniqueValues.check_chunk``/``check_table``; dry and real runs alike, as records
  are decided): the values an import writes must be unique in the result. A written value that
  another target row holds now is fine only if that row gives it up — the import rewrites it
  with another value, or replace mode deletes it. Otherwise (the row is kept as it is: not
  newer in update mode, any existing row in append mode, an archive record with the same
  value) it is a conflict, refused naming both records.
- Making room (``UniqueValues.make_room``; real runs, just before a chunk is written): the rows
  holding values the chunk writes have them moved out of the way — NULL where the field allows
  it, else a temporary value no row holds (an integer past the column's largest, a marked
  text, a new UUID). Each such row gets its own value back when its record is written, or is
  deleted at the end; the check guarantees that no temporary value survives, and
  ``check_restored`` verifies it.

The values are compared as Python values, exactly, and on MariaDB also as the column's
collation compares them (``sync.collation``): two written texts it takes for one value, or a
written text that another row holds in another such form, are refused (such a value is not
moved aside).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connections, models
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Max, Min, UniqueConstraint

from sync.collation import Collation, column_collations, fields_collated, fold_values
from sync.fieldtypes import INTEGER_FIELDS, TEXT_FIELDS
from sync.keys import CHUNK, PlaceholderPk, SeenKeys, chunked, filter_in, keyed_ids
from sync.records import json_key
from sync.schema import SECRET_NOT_SHOWN, is_sensitive

PARKED_TEXT = "\u2060sync-parked-"  # a word joiner first: no one types it


@dataclass(eq=False)
class UniqueGroup:
    """One unique field, or the fields of one unique constraint, other than the sync key."""

    fields: list[models.Field]
    park: models.Field | None  # where a holder's value is moved aside; None: it cannot be

    @property
    def attnames(self) -> list[str]:
        return [f.attname for f in self.fields]

    def value(self, values: dict) -> tuple | None:
        """The group's value in a row (attname → value); None when a part is NULL (NULLs
        never collide) or a row the import adds (a placeholder: no target row holds it)."""
        value = tuple(values[attname] for attname in self.attnames)
        for part in value:
            if part is None or type(part) is PlaceholderPk:
                return None
        return value

    def describe(self, value: tuple) -> str:
        """The group and its value as a message names them; a secret's value not at all
        (SYNC_SENSITIVE_FIELDS)."""
        if len(self.fields) == 1:
            return f"field {self.fields[0].name!r} value {self.shown(value)}"
        return f"fields {[f.name for f in self.fields]} values {self.shown(value)}"

    def shown(self, value: tuple) -> str:
        """The value alone as a message shows it (a secret's not at all)."""
        shown = [
            SECRET_NOT_SHOWN if is_sensitive(f.model, f.name) else repr(part)
            for f, part in zip(self.fields, value, strict=True)
        ]
        return shown[0] if len(shown) == 1 else f"[{', '.join(shown)}]"


def unique_groups(
    model: type[models.Model], present: set[str], key_fields: Iterable[str]
) -> list[UniqueGroup]:
    """The model's unique fields and constraints other than its sync key, among the fields
    ``present`` (written from the archive). One that includes the key needs no care: no other
    row can hold a value with this row's key in it."""
    opts = model._meta
    sets = [(f.name,) for f in opts.concrete_fields if f.unique and not f.primary_key]
    sets += [tuple(names) for names in opts.unique_together]
    sets += [
        tuple(c.fields)
        for c in opts.constraints
        if isinstance(c, UniqueConstraint) and c.fields and c.condition is None
    ]
    key = set(key_fields)
    groups = []
    for names in dict.fromkeys(sets):
        if key <= set(names) or not set(names) <= present:
            continue
        fields = [opts.get_field(name) for name in names]
        groups.append(UniqueGroup(fields, parking_field(fields)))
    return groups


def parking_field(fields: list[models.Field]) -> models.Field | None:
    for f in fields:
        if f.null:
            return f
    for f in fields:
        kind = f.get_internal_type()
        if not f.is_relation and kind in INTEGER_FIELDS | TEXT_FIELDS | {"UUIDField"}:
            return f
    return None


class UniqueValues:
    """One table's unique values as an import writes them (see the module doc)."""

    def __init__(
        self,
        model: type[models.Model],
        using: str,
        groups: list[UniqueGroup],
        key_of: Callable[[Any], tuple],
        fail: Callable[[tuple, str], Exception],
        spill_at: int,
    ):
        self.model = model
        self.using = using
        self.groups = groups
        self.key_of = key_of  # id → sync key of a target row
        self.fail = fail
        # Per group: the values written, with the key of the record writing each; the
        # values their rows gave up; and written values held by another row (value → the
        # writing record's key and the holder's id) until that row is known to give it up.
        self.taken = {group: SeenKeys(spill_at, owned=True) for group in groups}
        self.released = {group: SeenKeys(spill_at) for group in groups}
        self.pending: dict[UniqueGroup, dict[tuple, tuple[tuple, Any]]] = {g: {} for g in groups}
        # Real runs: rows whose values were moved aside (id → group → the value they held).
        self.parked: dict[Any, dict[UniqueGroup, tuple]] = {}
        # MariaDB: groups with text fields whose collation takes differing texts for one
        # value (position in the group → collation), and their written values as the
        # database compares them, with the key of the record writing each (sync.collation).
        collations = column_collations(model, [f.name for g in groups for f in g.fields], using)
        self.collated: dict[UniqueGroup, dict[int, Collation]] = {}
        for group in groups:
            found = {
                i: collations[f.name] for i, f in enumerate(group.fields) if f.name in collations
            }
            if found:
                self.collated[group] = found
        self.folded = {group: SeenKeys(spill_at, owned=True) for group in self.collated}

    # -- the check -------------------------------------------------------------------------
    def check_chunk(self, written: list[tuple[tuple, Any, dict, dict | None]]) -> None:
        """Check the (key, id or None, values, current values or None) rows a chunk writes."""
        for group in self.groups:
            wanted: dict[tuple, tuple[tuple, Any]] = {}
            given_up = []
            for key, pk, values, old in written:
                value = group.value(values)
                if old is not None:
                    was = group.value(old)
                    if was is not None and was != value:
                        given_up.append(was)
                if value is None:
                    continue
                if value in wanted:
                    raise self.given_twice(group, value, key, wanted[value][0])
                wanted[value] = (key, pk)
            self.released[group].add_all(given_up)
            if not wanted:
                continue
            taken = self.taken[group]
            repeated = taken.add_new(list(wanted), [key for key, _ in wanted.values()])
            if repeated is not None:
                raise self.given_twice(group, repeated, wanted[repeated][0], taken.owner(repeated))
            if group in self.collated:
                self.check_collated(group, wanted)
            self.note_holders(group, wanted)

    def check_collated(self, group: UniqueGroup, wanted: dict) -> None:
        """MariaDB: refuse two written values that the column takes for one."""
        values = list(wanted)
        folded = self.fold(group, values)
        seen = self.folded[group]
        repeated = seen.add_new(folded, values)
        if repeated is None:
            return
        mine = [value for value, fold in zip(values, folded, strict=True) if fold == repeated]
        if repeated in seen:  # written before, by another record
            value, other = mine[0], seen.owner(repeated)
            other_key = self.taken[group].owner(other)
        else:
            other, value = mine[:2]
            other_key = wanted[other][0]
        raise self.fail(
            wanted[value][0],
            f"{group.describe(value)} is given to {self.label} {json_key(other_key)!r} too, "
            f"as {group.shown(other)}: "
            f"{self.collation_named(group)}",
        )

    def fold(self, group: UniqueGroup, values: list[tuple]) -> list[tuple]:
        """Values of ``group`` as the database compares them (text parts folded)."""
        return fold_values(values, self.collated[group])

    def collation_named(self, group: UniqueGroup) -> str:
        named = fields_collated((group.fields[i].name, c) for i, c in self.collated[group].items())
        return f"the collation of its field {named} takes them for one value"

    def note_holders(self, group: UniqueGroup, wanted: dict) -> None:
        """Remember the written values that another row holds now (moved aside: not it)."""
        alike: list | None = [] if group in self.collated else None
        for holder, value in self.holders(group, wanted, alike):
            key, pk = wanted[value]
            if holder == pk or holder in self.parked:
                continue
            if group.park is None and value not in self.released[group]:
                raise self.fail(
                    key,
                    f"{group.describe(value)} is held by {self.label} "
                    f"{json_key(self.key_of(holder))!r}; this import cannot move values of "
                    f"such a field between rows",
                )
            self.pending[group][value] = (key, holder)
        if alike:
            self.refuse_alike(group, wanted, alike)

    def refuse_alike(self, group: UniqueGroup, wanted: dict, alike: list) -> None:
        """MariaDB: a written value that another row holds in a text the column takes for one
        is refused (such a value cannot be moved aside: the database would refuse the write)."""
        by_fold = dict(zip(self.fold(group, list(wanted)), wanted, strict=True))
        held = [value for _, value in alike]
        for (holder, theirs), fold in zip(alike, self.fold(group, held), strict=True):
            value = by_fold.get(fold)
            if value is None:
                continue
            key, pk = wanted[value]
            if holder != pk:
                raise self.fail(
                    key,
                    f"{group.describe(value)} is held by {self.label} "
                    f"{json_key(self.key_of(holder))!r} as {group.shown(theirs)}: "
                    f"{self.collation_named(group)}, and this import cannot move such values "
                    f"between rows",
                )

    def check_table(self, deleted: dict) -> None:
        """The table has been read: every written value held by another row must be given up
        by it — rewritten with another value, or deleted (``deleted``: id → key)."""
        for group in self.groups:
            released = self.released[group]
            for value, (key, holder) in self.pending[group].items():
                if holder not in deleted and value not in released:
                    raise self.fail(
                        key,
                        f"{group.describe(value)} is held by {self.label} "
                        f"{json_key(self.key_of(holder))!r}, which keeps it (values of a "
                        f"unique field must differ)",
                    )
            self.pending[group] = {}

    def given_twice(self, group: UniqueGroup, value: tuple, key: tuple, other) -> Exception:
        return self.fail(
            key,
            f"{group.describe(value)} is given to {self.label} {json_key(other)!r} too (values "
            f"of a unique field must differ)",
        )

    @property
    def label(self) -> str:
        return self.model._meta.label

    def holders(
        self, group: UniqueGroup, wanted: Iterable[tuple], alike: list | None = None
    ) -> list[tuple[Any, tuple]]:
        """(id, value) of the target rows holding one of the ``wanted`` values now; to
        ``alike``, if given, those of the other rows the query found (MariaDB compares the
        first field under its collation)."""
        wanted = set(wanted)
        first = group.fields[0]
        rows = self.model._base_manager.using(self.using)
        found = []
        for part in chunked({value[0] for value in wanted}, CHUNK):
            query = filter_in(rows, first.name, part).order_by("pk")
            for pk, *value in query.values_list("pk", *group.attnames):
                if tuple(value) in wanted:
                    found.append((pk, tuple(value)))
                elif alike is not None:
                    alike.append((pk, tuple(value)))
        return found

    def as_before(self, rows: dict[Any, dict]) -> None:
        """Real runs: give rows (id → attname → value) whose values were moved aside the
        values they held (what the archive is compared with, as in a dry run)."""
        for pk in self.parked.keys() & rows.keys():
            for group, value in self.parked[pk].items():
                rows[pk].update(zip(group.attnames, value, strict=True))

    # -- making room (real runs) -----------------------------------------------------------
    def make_room(self, rows: list[tuple[Any, dict]]) -> None:
        """Before a chunk's (id or None, values) rows are written: move the values they write
        out of the other rows holding them."""
        for group in self.groups:
            wanted = {}
            for pk, values in rows:
                value = group.value(values)
                if value is not None:
                    wanted[value] = pk
            in_the_way = [
                (holder, value)
                for holder, value in self.holders(group, wanted)
                if holder != wanted[value]
            ]
            if in_the_way:
                self.park(group, in_the_way, written=rows)
        for pk, _ in rows:  # written now: they hold their own values again
            self.parked.pop(pk, None)

    def park(self, group: UniqueGroup, rows: list[tuple[Any, tuple]], written: list) -> None:
        """Move ``group``'s (id, value) ``rows`` aside, to values that no row holds and none
        of the ``written`` rows is about to take."""
        f = group.park
        if f is None:  # the check refuses such moves first
            raise self.fail(self.key_of(rows[0][0]), f"cannot move {group.describe(rows[0][1])}")
        connection = connections[self.using]
        opts = self.model._meta
        quote = connection.ops.quote_name
        sql = (
            f"UPDATE {quote(opts.db_table)} SET {quote(f.column)} = %s "
            f"WHERE {quote(opts.pk.column)} = %s"
        )
        avoid = {values[f.attname] for _, values in written}
        temporary = self.free_values(f, len(rows), avoid)
        if temporary is None:
            raise self.fail(
                self.key_of(rows[0][0]),
                f"cannot move {group.describe(rows[0][1])} aside: no free value for it",
            )
        with connection.cursor() as cursor:
            cursor.executemany(
                sql,
                [
                    [
                        f.get_db_prep_save(value, connection),
                        opts.pk.get_db_prep_value(pk, connection),
                    ]
                    for (pk, _), value in zip(rows, temporary, strict=True)
                ],
            )
        for pk, value in rows:
            self.parked.setdefault(pk, {}).setdefault(group, value)

    def free_values(self, f: models.Field, count: int, avoid: set) -> list | None:
        """``count`` values of ``f`` that no row holds and that are not in ``avoid`` (None:
        there are none)."""
        if f.null:
            return [None] * count
        kind = f.get_internal_type()
        if kind == "UUIDField":
            return [uuid.uuid4() for _ in range(count)]
        rows = self.model._base_manager.using(self.using)
        if kind in INTEGER_FIELDS:
            return free_integers(rows, f, count, avoid)
        names = (f"{PARKED_TEXT}{n}" for n in itertools.count())
        free: list[str] = []
        while len(free) < count:
            batch = list(itertools.islice(names, 2 * (count - len(free))))
            held = set(filter_in(rows, f.name, batch).values_list(f.attname, flat=True))
            free += [name for name in batch if name not in held | avoid][: count - len(free)]
        if f.max_length is not None and max(map(len, free)) > f.max_length:
            return None
        return free

    def check_restored(self, deleted: dict) -> None:
        """Real runs, at the end: every row whose value was moved aside has its own back
        (or is deleted). The check makes sure of it; this makes sure of the check."""
        for pk, groups in self.parked.items():
            if pk not in deleted:
                group, value = next(iter(groups.items()))
                raise self.fail(
                    self.key_of(pk),
                    f"{group.describe(value)} was moved aside and not given back (unique "
                    f"values of the archive and the target conflict)",
                )


def free_integers(
    rows: models.QuerySet, f: models.Field, count: int, avoid: set
) -> list[int] | None:
    """``count`` integers past the largest the column holds or ``avoid`` names (or below the
    smallest), in the field's range."""
    low, high = BaseDatabaseOperations.integer_field_ranges[f.get_internal_type()]
    bounds = rows.aggregate(largest=Max(f.attname), smallest=Min(f.attname))
    numbers = [n for n in (*avoid, *bounds.values()) if type(n) is int]
    largest, smallest = max(numbers, default=0), min(numbers, default=0)
    if largest + count <= high:
        return list(range(largest + 1, largest + count + 1))
    if smallest - count >= low:
        return list(range(smallest - count, smallest))
    return None


def key_lookup(model: type[models.Model], using: str, paths: list[str]) -> Callable[[Any], tuple]:
    """id → sync key of a target row (for messages)."""

    def key_of(pk: Any) -> tuple:
        rows = model._base_manager.using(using).filter(pk=pk)
        return next(keyed_ids(rows, paths), ((pk,), None))[0]

    return key_of
