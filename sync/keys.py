"""Resolving sync keys to the target database's ids, for whole tables or a chunk at a time."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db import models

from sync.columns import read_columns
from sync.records import column_keys, key_tuple, normalise_key
from sync.schema import key_paths

CHUNK = 2000


class KeyIndex:
    """Sync key → id of one model's rows in the target (and of the rows this import adds).

    Whole while the table is small: every key is read once and held. Bounded when it is large
    (more than ``SYNC_KEY_MAP_LIMIT`` rows): the keys a chunk of records refers to are read
    just before it is decoded (``prefetch``) and held until the cache is full, so memory stays
    flat however large the table.
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
            self.bounded = self.rows().count() > settings.SYNC_KEY_MAP_LIMIT
        return self.bounded

    def rows(self) -> models.QuerySet:
        return self.model._default_manager.using(self.using)

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
        if len(cache) + len(missing) > settings.SYNC_KEY_MAP_LIMIT:
            cache.clear()
            missing = keys
        for chunk in chunked(missing, CHUNK):
            cache.update(ids_of_keys(self.rows(), self.paths, chunk))


def ids_of_keys(queryset: models.QuerySet, paths: list[str], keys: list[tuple]) -> dict:
    """Key → id of the rows of ``queryset`` with these keys: the rows whose first key part
    matches, kept if the whole key does (one query, whatever the key's shape)."""
    wanted = set(keys)
    rows = queryset.filter(**{f"{paths[0]}__in": {key[0] for key in keys}})
    return {key: pk for key, pk in keyed_ids(rows, paths) if key in wanted}


def target_key(raw: Any) -> tuple:
    """The key a reference in a record names."""
    # One text part is by far the most common key (xmlid, name, sysmail): no normalising.
    return (raw,) if type(raw) is str else normalise_key(key_tuple(raw))


def keyed_ids(queryset: models.QuerySet, paths: list[str]) -> Iterator[tuple[tuple, Any]]:
    """(sync key, id) of the rows of ``queryset``, read a column at a time."""
    for pks, *parts in read_columns(queryset.values_list("pk", *paths), 10000):
        yield from zip(column_keys(parts), pks, strict=True)


class PlaceholderPk:
    """Stands for the id of a row the archive adds that is not written yet: a dry run never
    writes it; a real run looks the id up when the rows referring to it are written."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __repr__(self) -> str:
        return f"<new {self.key!r}>"


def chunked(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
