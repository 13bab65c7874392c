"""Resolving sync keys to the target database's ids, for whole tables or a chunk at a time."""

from __future__ import annotations

import itertools
import pickle
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import connections, models

from sync.columns import read_columns
from sync.conf import sync_settings
from sync.fieldtypes import INTEGER_FIELDS, TEXT_FIELDS
from sync.generic import GenericPart, fold, lookups
from sync.records import column_keys, key_tuple, normalise_key
from sync.schema import key_paths

CHUNK = 2000
CACHE_KEYS = 10 * CHUNK  # ids a bounded index holds between chunks (for runs of references)


class KeyIndex:
    """Sync key → id of one model's rows in the target (and of the rows this import adds).

    Whole while the table is small: every key is read once and held. Bounded when it is large
    (more than ``SYNC_KEY_MAP_LIMIT`` rows): the keys a chunk of records refers to are read
    just before it is decoded (``prefetch``) and held until ``CACHE_KEYS`` are held, so memory
    stays flat however large the table.
    """

    def __init__(self, model: type[models.Model], using: str, bounded: bool | None = None):
        self.model = model
        self.using = using
        self.paths = key_paths(model)
        self.bounded = bounded  # None: decided by the table's size when first used
        self._map: dict[tuple, Any] | None = None

    @property
    def map(self) -> dict[tuple, Any]:
        if self._map is None:
            self._map = {} if self.is_bounded() else dict(keyed_ids(self.rows(), self.paths))
        return self._map

    def is_bounded(self) -> bool:
        if self.bounded is None:
            self.bounded = self.rows().count() > sync_settings.SYNC_KEY_MAP_LIMIT
        return self.bounded

    def rows(self) -> models.QuerySet:
        return self.model._base_manager.using(self.using)

    def fill(self, found: dict[tuple, Any]) -> None:
        """Take ids the caller has read: a whole index keeps them; a bounded one reads the
        ids it needs when they are needed."""
        if self.bounded:
            return
        if self._map is None:
            self._map = found
        else:
            self._map.update(found)

    def prefetch(self, keys: Iterable[tuple]) -> None:
        """Bounded: read the ids of those of ``keys`` not held yet; nothing for a whole index."""
        cache = self.map
        if not self.bounded:
            return
        keys = set(keys)
        missing = keys - cache.keys()
        if not missing:
            return
        if len(cache) + len(missing) > CACHE_KEYS:
            cache.clear()
            missing = keys
        for chunk in chunked(missing, CHUNK):
            cache.update(ids_of_keys(self.rows(), self.paths, chunk))


def ids_of_keys(queryset: models.QuerySet, paths: list, keys: list[tuple]) -> dict:
    """Key → id of the rows of ``queryset`` with these keys: the rows whose first key part
    matches, kept if the whole key does (one query, whatever the key's shape)."""
    if connections[queryset.db].vendor == "postgresql":
        # No PostgreSQL row holds a NUL character, and a query naming one fails: such a key
        # is simply not found (the caller names the record that refers to it).
        keys = [key for key in keys if not holds_nul(key)]
        if not keys:
            return {}
    wanted = set(keys)
    rows = prefilter(queryset, paths, keys)
    return {key: pk for key, pk in keyed_ids(rows, paths) if key in wanted}


def prefilter(queryset: models.QuerySet, paths: list, keys: Iterable[tuple]) -> models.QuerySet:
    """``queryset`` narrowed to the rows whose first key part is one of ``keys``' (the first
    part an ORM lookup reads: a generic part is none)."""
    for position, path in enumerate(paths):
        if type(path) is not GenericPart:
            return filter_in(queryset, path, {key[position] for key in keys})
    return queryset


def holds_nul(key: tuple) -> bool:
    """Whether a text part of ``key`` (nested parts included) holds a NUL character."""
    return any(
        "\x00" in part if type(part) is str else type(part) is tuple and holds_nul(part)
        for part in key
    )


# Columns whose values go to the driver unprepared when every value has the plain type.
_PLAIN_COLUMNS = {str: TEXT_FIELDS, int: INTEGER_FIELDS}


def filter_in(queryset: models.QuerySet, path: str, values: Iterable) -> models.QuerySet:
    """``queryset.filter(<path>__in=values)``; for a text or integer column of the model
    itself and values of that plain type, without Django's preparation of every value (a
    chunk's lookup has thousands), which is most of such a query's cost here."""
    values = list(values)
    kind = type(values[0]) if values else None
    if kind in _PLAIN_COLUMNS and "__" not in path and all(type(v) is kind for v in values):
        opts = queryset.model._meta
        f = opts.pk if path == "pk" else opts.get_field(path)
        if f.get_internal_type() in _PLAIN_COLUMNS[kind] and f.concrete and not f.is_relation:
            quote = connections[queryset.db].ops.quote_name
            marks = ", ".join(["%s"] * len(values))
            where = f"{quote(opts.db_table)}.{quote(f.column)} IN ({marks})"
            return queryset.extra(where=[where], params=values)
    return queryset.filter(**{f"{path}__in": values})


_KEY_PART_TYPES: dict[type[models.Model], tuple[frozenset, ...]] = {}


def key_part_types(model: type[models.Model]) -> tuple[frozenset, ...]:
    """The JSON types each part of ``model``'s flattened sync key may have in a record (as
    ``normalise_key`` gives them): integers for integer fields, booleans for booleans, numbers
    for floats, lists for a generic reference's key, texts for the rest; null for any."""
    types = _KEY_PART_TYPES.get(model)
    if types is None:
        types = tuple(_part_types(model, path) for path in key_paths(model))
        _KEY_PART_TYPES[model] = types
    return types


def _part_types(model: type[models.Model], path: Any) -> frozenset:
    if isinstance(path, GenericPart):
        return frozenset({list, type(None)})
    *relations, name = path.split("__")
    for relation in relations:
        model = model._meta.get_field(relation).related_model
    f = model._meta.get_field(name)
    if f.is_relation:  # an id column in a key path (``delivery__webhook_id``)
        f = f.target_field
    internal = f.get_internal_type()
    if internal == "JSONField":  # any JSON value (a key of one is odd, but allowed)
        return frozenset({str, int, float, bool, list, type(None)})
    if internal in INTEGER_FIELDS:
        kinds = {int}
    elif internal == "BooleanField":
        kinds = {bool}
    elif internal == "FloatField":
        kinds = {int, float}
    else:
        kinds = {str}
    return frozenset({*kinds, type(None)})


def mistyped_key(model: type[models.Model], raw: Any) -> bool:
    """Whether a reference's key has a part of another JSON type than the key's field: Python
    takes ``true`` and ``1.0`` for ``1``, so a lookup alone would name the row keyed ``1``.
    (A key of another length just names no row.)"""
    if type(raw) is str:  # a text for a number names no row: the lookup says so
        return False
    parts = raw if type(raw) is list else (raw,)
    types = key_part_types(model)
    return len(parts) == len(types) and any(
        type(part) not in allowed for part, allowed in zip(parts, types, strict=True)
    )


_TYPE_NAMES = {int: "integer", bool: "true/false", float: "number", str: "text", list: "key"}


def key_types_shown(model: type[models.Model]) -> str:
    """The types of ``model``'s key parts, for a message (``integer``, ``text, text``)."""
    return ", ".join(
        " or ".join(sorted(_TYPE_NAMES[t] for t in types if t in _TYPE_NAMES))
        for types in key_part_types(model)
    )


def target_key(raw: Any) -> tuple:
    """The key a reference in a record names."""
    # One text part is by far the most common key (xmlid, name, sysmail): no normalising.
    return (raw,) if type(raw) is str else normalise_key(key_tuple(raw))


def keyed_ids(
    queryset: models.QuerySet, paths: list, depth: int = 0
) -> Iterator[tuple[tuple, Any]]:
    """(sync key, id) of the rows of ``queryset``, read a column at a time (``depth``: how
    deep in generic references this key is, see sync.generic)."""
    for pks, *parts in read_columns(queryset.values_list("pk", *lookups(paths)), 10000):
        yield from zip(column_keys(fold(paths, parts, queryset.db, depth)), pks, strict=True)


SPILL_CACHE_KIB = 4096


class SeenKeys:
    """A set of keys (tuples of JSON values), compared exactly: the keys read from one table
    (to find a key given twice, the target rows the archive lacks, and whether a referenced row
    is one the archive adds), or the values of a unique field that an import writes, each with
    the key of the record that writes it (``owned``).

    A Python set (a dict when owned) until it holds ``spill_at`` keys; then a private,
    temporary SQLite database on disk with a page cache of at most ``SPILL_CACHE_KIB``, so
    however many keys a table has, they cost no more memory than that. There each key is
    stored whole beside its hash: the hash finds the candidates, the keys themselves decide
    (two keys may share a hash: -1 and -2, 1 and 2**61). A key of one part is held as that
    part, without its tuple.
    """

    def __init__(self, spill_at: int, owned: bool = False):
        self.spill_at = spill_at
        self.owned = owned
        self.held: set | dict = {} if owned else set()
        self.db: sqlite3.Connection | None = None

    def add_new(self, keys: list[tuple], owners: list | None = None) -> tuple | None:
        """Add these keys (owned: with their owners); return the first that was added
        before, or is here twice. Nothing is added then."""
        items = [key[0] if len(key) == 1 else key for key in keys]
        chunk = set(items)
        if len(chunk) == len(items) and not self.any_held(chunk):
            if self.db is not None:
                self.insert(items, owners)
            elif self.owned:
                self.held.update(zip(items, owners, strict=True))
            else:
                self.held |= chunk
            if self.db is None and len(self.held) > self.spill_at:
                self.spill()
            return None
        before = self.held_of(chunk)
        here: set = set()
        for key, item in zip(keys, items, strict=True):
            if item in before or item in here:
                return key
            here.add(item)
        return None  # not reached: a repeat is either before or here

    def add_all(self, keys: list[tuple]) -> None:
        """Add those of these keys not held yet (not owned)."""
        items = {key[0] if len(key) == 1 else key for key in keys}
        new = items - self.held_of(items)
        if self.db is not None:
            self.insert(list(new), None)
            return
        self.held |= new
        if len(self.held) > self.spill_at:
            self.spill()

    def any_held(self, items: set) -> bool:
        if self.db is None:
            return (
                not self.held.keys().isdisjoint(items)
                if self.owned
                else not self.held.isdisjoint(items)
            )
        return bool(self.held_of(items))

    def held_of(self, items: set) -> set:
        """Those of ``items`` (compact keys) held."""
        if self.db is None:
            return items & self.held.keys() if self.owned else items & self.held
        found: set = set()
        for part in chunked(items, CHUNK):
            found |= {item for item, _ in self.stored(part)} & set(part)
        return found

    def stored(self, items: list) -> Iterator[tuple[Any, Any]]:
        """(key, owner) of the stored keys sharing a hash with one of ``items``."""
        hashes = list({hash(item) for item in items})
        marks = ", ".join(["?"] * len(hashes))
        rows = self.db.execute(f"SELECT k, o FROM seen WHERE h IN ({marks})", hashes)
        return ((pickle.loads(k), o if o is None else pickle.loads(o)) for k, o in rows)

    def __contains__(self, key: tuple) -> bool:
        item = key[0] if len(key) == 1 else key
        if self.db is None:
            return item in self.held
        return bool(self.held_of({item}))

    def owner(self, key: tuple) -> Any:
        """The owner given with ``key`` (owned; None if not held)."""
        item = key[0] if len(key) == 1 else key
        if self.db is None:
            return self.held.get(item)
        return next((o for k, o in self.stored([item]) if k == item), None)

    def absent(self, keys: Iterable[tuple[tuple, Any]]) -> Iterator[tuple[tuple, Any]]:
        """The (key, value) pairs whose key is not held, looked up a batch at a time."""
        for part in chunked(keys, CHUNK):
            items = [key[0] if len(key) == 1 else key for key, _ in part]
            held = self.held_of(set(items))
            yield from (pair for pair, item in zip(part, items, strict=True) if item not in held)

    def spill(self) -> None:
        self.db = sqlite3.connect("", isolation_level=None)  # "": deleted when closed
        self.db.execute(f"PRAGMA cache_size = -{SPILL_CACHE_KIB}")
        self.db.execute("PRAGMA journal_mode = OFF")  # private and thrown away: no journal
        self.db.execute(
            "CREATE TABLE seen (h INTEGER, k BLOB, o BLOB, PRIMARY KEY (h, k)) WITHOUT ROWID"
        )
        held, self.held = self.held, {} if self.owned else set()
        if self.owned:
            self.insert(list(held), list(held.values()))
        else:
            self.insert(list(held), None)

    def insert(self, items: list, owners: list | None) -> None:
        dump = pickle.dumps
        owners = [None] * len(items) if owners is None else [dump(o) for o in owners]
        self.db.execute("BEGIN")  # one transaction a batch, not one a row
        self.db.executemany(
            "INSERT INTO seen VALUES (?, ?, ?)",
            ((hash(item), dump(item), owner) for item, owner in zip(items, owners, strict=True)),
        )
        self.db.execute("COMMIT")


class PlaceholderPk:
    """Stands for the id of a row the archive adds that is not written yet: a dry run never
    writes it; a real run looks the id up when the rows referring to it are written. (A
    generic reference's model varies by record: ``model`` says which.)"""

    __slots__ = ("key", "model")

    def __init__(self, key, model: type[models.Model] | None = None):
        self.key = key
        self.model = model

    def __repr__(self) -> str:
        return f"<new {self.key!r}>"


def chunked(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
