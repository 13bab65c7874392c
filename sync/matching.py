"""Key matching: which target row (if any) each archive record of a table is, by sync key.

A small table's target keys (and, in update mode, ``updated_at`` stamps) are read once and
held; a large one — more than ``SYNC_KEY_MAP_LIMIT`` rows in the target or the archive — is
looked up a chunk at a time, so memory stays flat however large it is. Keys read before are
remembered (``SeenKeys``): a key twice in the archive is refused, and in replace mode the
target keys the archive lacks are the rows it deletes.

In update mode, JSON lines whose key and ``updated_at`` a regular expression reads straight
from the line (``stamp_peek``) are parsed only when ``sync.decide`` needs their content.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connections, models
from django.db.models.functions import Cast

from sync import generic
from sync.collation import column_collations, fields_collated, fold_values
from sync.columns import UTC_TEXT, read_columns, utc_datetime_texts
from sync.conf import sync_settings
from sync.keys import SeenKeys, keyed_ids, prefilter
from sync.records import NUL_REFUSED, column_keys, field_decoder, json_key, normalise_key
from sync.schema import SyncModel, key_paths
from sync.sources import SourceTable


@dataclass(slots=True)
class Peeked:
    """A JSON line not parsed yet, with its ``updated_at`` as written."""

    line: bytes
    stamp: str


# A JSON value that is neither a container nor a string with escapes.
_PLAIN_VALUE = rb'(?:"[^"\\]*"|[-+.\w]+)'


def stamp_peek(fields: list[str], key: str) -> Callable[[bytes], re.Match | None] | None:
    """A matcher for the start of a JSON line as the export writes it (the key field first,
    then the others in the index's order) that reads the key (group 1) and ``updated_at``
    (group 2) without parsing the line. A line in any other shape does not match and is parsed:
    spaces, escapes in those strings, another order, a list or an object before ``updated_at``.
    """
    if not fields or fields[0] != key or "updated_at" not in fields:
        return None
    before = fields[1 : fields.index("updated_at")]
    pattern = rb"\{" + re.escape(orjson.dumps(key)) + rb':"([^"\\]*)"'
    for name in before:
        pattern += rb"," + re.escape(orjson.dumps(name)) + rb":" + _PLAIN_VALUE
    pattern += rb',"updated_at":"([^"\\]*)"'
    return re.compile(pattern).match


class KeyMatcher:
    """Matches one table's archive records to target rows (see the module doc).

    ``stamped``: update mode on a table with ``updated_at`` — the target's stamps are read with
    its keys; ``fail(key, message)``: the error about a record.
    """

    def __init__(
        self,
        plan: SyncModel,
        source: SourceTable,
        using: str,
        stamped: bool,
        datetimes_as_text: bool,
        fail: Callable[..., Exception],
    ):
        self.plan = plan
        self.model = plan.model
        self.source = source
        self.using = using
        self.connection = connections[using]
        self.stamped = stamped
        self.datetimes_as_text = datetimes_as_text
        self.fail = fail
        self.stores_nul = self.connection.vendor != "postgresql"
        self.key_paths = key_paths(self.model)
        # The name of a key made of one plain field (xmlid, name…), the common case.
        key_fields = plan.key_fields
        single = len(key_fields) == 1 and key_fields[0] not in plan.references
        self.simple_key = key_fields[0] if single else None
        self.peek = None
        if stamped and self.simple_key is not None:
            self.peek = stamp_peek(source.fields, self.simple_key)
        if stamped:
            self.updated_at_decoder = field_decoder(self.model._meta.get_field("updated_at"))
        self.keys_seen = SeenKeys(sync_settings.SYNC_KEY_MAP_LIMIT)
        # MariaDB: key parts whose column's collation takes differing texts for one value
        # (position, field name, collation), the keys read as it compares them (→ the key),
        # and, for a table read whole, the target's keys so (see sync.collation).
        collations = column_collations(
            self.model, [path for path in self.key_paths if type(path) is str], using
        )
        self.collated = [
            (position, path, collations[path])
            for position, path in enumerate(self.key_paths)
            if type(path) is str and path in collations
        ]
        self.folds_seen = SeenKeys(sync_settings.SYNC_KEY_MAP_LIMIT, owned=True)
        self.target_folds: dict[tuple, tuple] | None = None
        self.found: dict[tuple, Any] = {}  # key → id of a table read whole
        self.stamps: dict[Any, Any] = {}  # id → updated_at, update mode
        self.matched = 0  # archive keys found in the target
        self.rows_before = 0
        self.by_chunk = False  # look keys up per chunk instead of holding a whole map

    def manager(self) -> models.Manager:
        return self.model._base_manager.using(self.using)

    def start(self) -> None:
        """Count the target's rows and, for a small table, read its keys whole."""
        self.rows_before = self.manager().count()
        # The keys of both sides mostly overlap: the larger side is what a whole map holds.
        self.by_chunk = max(self.rows_before, self.source.count) > sync_settings.SYNC_KEY_MAP_LIMIT
        if not self.by_chunk:
            self.found, self.stamps = self.target_rows(self.manager().all())

    def match(self, chunk: list) -> list[tuple[tuple, Any, dict | Peeked]]:
        """(key, target id or None, record) of a chunk of source rows; a key seen before is
        refused. In update mode ``stamps`` then holds the matched rows' ``updated_at``."""
        keys, records = self.read_chunk(chunk)
        found = self.found
        if self.by_chunk:
            self.refuse_nul_keys(keys)
            found, self.stamps = self.target_rows(
                prefilter(self.manager().all(), self.key_paths, keys)
            )
        self.check_unique(keys)
        pks = [found.get(key) for key in keys]
        if self.collated:
            self.check_collated(keys, pks, found)
        self.matched += len(pks) - pks.count(None)
        return list(zip(keys, pks, records, strict=True))

    def check_collated(self, keys: list[tuple], pks: list, found: dict[tuple, Any]) -> None:
        """MariaDB: refuse a key that the database takes for another key of the archive, or
        for a target row's that the archive does not name (it would refuse to store it, after
        a dry run said all was well; see sync.collation)."""
        folded = self.fold_keys(keys)
        seen = self.folds_seen
        repeated = seen.add_new(folded, keys)
        if repeated is not None:
            mine = [key for key, fold in zip(keys, folded, strict=True) if fold == repeated]
            if repeated in seen:  # read before: ``mine[0]`` repeats it
                key, other = mine[0], seen.owner(repeated)
            else:  # twice in this chunk: the second repeats the first
                other, key = mine[:2]
            raise self.fail(
                key,
                f"appears twice in the archive for this database: it is the same key as "
                f"{json_key(other)!r} under {self.collations_named()}",
                self.collated[0][1],
            )
        if all(pk is not None for pk in pks):
            return
        if self.by_chunk:  # ``found``: the target rows the database matched with the chunk's
            targets = dict(zip(self.fold_keys(list(found)), found, strict=True))
        else:
            if self.target_folds is None:
                self.target_folds = dict(zip(self.fold_keys(list(found)), found, strict=True))
            targets = self.target_folds
        for key, pk, fold in zip(keys, pks, folded, strict=True):
            other = None if pk is not None else targets.get(fold)
            if other is not None and other != key:
                raise self.fail(
                    key,
                    f"is the same key as the target's {json_key(other)!r} under "
                    f"{self.collations_named()}: the database cannot hold both, and the "
                    f"import cannot tell which row the record means",
                    self.collated[0][1],
                )

    def fold_keys(self, keys: list[tuple]) -> list[tuple]:
        """The keys as the database compares them: collated text parts folded."""
        return fold_values(keys, {position: c for position, _, c in self.collated})

    def collations_named(self) -> str:
        named = fields_collated((name, c) for _, name, c in self.collated)
        return f"the collation of its field {named}, which takes them for one value"

    def refuse_nul_keys(self, keys: list[tuple]) -> None:
        """Keys PostgreSQL cannot hold, refused before they are looked up there (the query
        would fail unnamed; decoding refuses them too, but later)."""
        if self.stores_nul:
            return
        for key in keys:
            if any(type(part) is str and "\x00" in part for part in key):
                fields = ", ".join(self.plan.key_fields)
                raise self.fail(key, f"the key ({fields}) {NUL_REFUSED}")

    def check_unique(self, keys: list[tuple]) -> None:
        """Remember these keys; a key read before is an error."""
        repeated = self.keys_seen.add_new(keys)
        if repeated is not None:
            raise self.fail(repeated, "appears twice in the archive")

    def read_chunk(self, chunk: list) -> tuple[list[tuple], list]:
        """The keys and records of a chunk of source rows.

        JSON lines are parsed here, except, in update mode, those whose key and
        ``updated_at`` the table's peek reads straight from the line: they stay ``Peeked``
        until ``sync.decide`` has said they are needed, and most are not. (The archive's
        verification parses and checks every line, in parallel, before anything is written.)
        """
        loads = self.source.loads
        if loads is None:
            return self.keys_of(chunk), chunk
        if self.peek is None:
            records = [loads(line) for line in chunk]
            return self.keys_of(records), records
        keys, records = [], []
        for line in chunk:
            match = self.peek(line)
            if match is None:  # a line in a shape the peek does not know: parse it
                record = loads(line)
                keys.append(normalise_key((record[self.simple_key],)))
            else:
                record = Peeked(line, match[2].decode())
                keys.append((match[1].decode(),))
            records.append(record)
        return keys, records

    def parsed(self, record: dict | Peeked) -> dict:
        return self.source.loads(record.line) if type(record) is Peeked else record

    def keys_of(self, records: list[dict]) -> list[tuple]:
        """The sync keys of these records, as the target's keys are given (``column_keys``)."""
        if self.simple_key is not None:
            return list(column_keys([[record[self.simple_key] for record in records]]))
        return [normalise_key(self.plan.key_of(record)) for record in records]

    def stamps_of(self, rows: Iterable[tuple]) -> Iterator[tuple[tuple, Any, Any, Any]]:
        """Update mode: (key, id, record, (archive's, target's) ``updated_at``) of matched
        rows, the stamps in a shape ``sync.decide.stamp_order`` compares; the pair is None for
        a new row, or for a stamp that does not decode (decoding reports it, naming the
        field)."""
        fullmatch = UTC_TEXT.fullmatch
        stamps = self.stamps
        for key, pk, record in rows:
            if pk is None:
                yield key, pk, record, None
                continue
            theirs = record.stamp if type(record) is Peeked else record.get("updated_at")
            ours = stamps[pk]
            if not (type(ours) is str and type(theirs) is str and fullmatch(theirs)):
                try:
                    theirs = self.updated_at_decoder(theirs)
                except (ValidationError, ValueError, TypeError):
                    yield key, pk, record, None
                    continue
                ours = self.aware(ours)
            yield key, pk, record, (theirs, ours)

    def target_rows(self, queryset: models.QuerySet) -> tuple[dict, dict]:
        """Key → id of the target's rows in ``queryset`` and, in update mode, id →
        ``updated_at``, in one read.

        The timestamps are read as text: Django's per-row converters cost more than the rest
        of an update that changes little. Where the database gives UTC text, it becomes the
        archive's own text (``utc_datetime_texts``), so most records compare unparsed.
        """
        lookups = ["pk", *generic.lookups(self.key_paths)]
        if self.stamped:
            lookups.append(Cast("updated_at", models.TextField()))
        found, stamps = {}, {}
        for pks, *parts in read_columns(queryset.values_list(*lookups), 10000):
            if self.stamped:
                texts = parts.pop()
                if self.datetimes_as_text:
                    texts = utc_datetime_texts(texts, self.connection)
                else:
                    texts = [self.aware(text) for text in texts]
                stamps.update(zip(pks, texts, strict=True))
            parts = generic.fold(self.key_paths, parts, self.using)
            found.update(zip(column_keys(parts), pks, strict=True))
        return found, stamps

    def aware(self, stamp: datetime.datetime | str | None) -> datetime.datetime | None:
        """A datetime the database gave (as text or naive in its zone) as an aware one."""
        if isinstance(stamp, str):
            stamp = datetime.datetime.fromisoformat(stamp)
        if stamp is not None and stamp.tzinfo is None and settings.USE_TZ:
            stamp = stamp.replace(tzinfo=self.connection.timezone)
        return stamp

    def target_keys(self) -> Iterator[tuple[tuple, Any]]:
        """(key, id) of every target row: the kept map, or a stream from the database."""
        if not self.by_chunk:
            return iter(self.found.items())
        return keyed_ids(self.manager(), self.key_paths)

    def unmatched(self) -> dict[Any, tuple]:
        """Id → key of the target's rows whose key the archive lacks (none to look for when
        every row the table had was matched)."""
        if self.by_chunk and self.matched >= self.rows_before:
            return {}
        return {pk: key for key, pk in self.keys_seen.absent(self.target_keys())}

    def release(self, keep_keys: bool) -> None:
        """Done with the table: drop the maps (the seen keys too, unless ``keep_keys``: they
        tell references to rows the archive adds)."""
        self.found, self.stamps, self.target_folds = {}, {}, None
        self.folds_seen = SeenKeys(self.folds_seen.spill_at, owned=True)
        if not keep_keys:
            self.keys_seen = SeenKeys(self.keys_seen.spill_at)
