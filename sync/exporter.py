"""Export: read the chosen tables in one consistent snapshot and write an archive.

This is the engine; export jobs (records, stale marking, leftover cleanup) are
``sync.jobs.exports``."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path

import django
from django.conf import settings
from django.db import connections, models, transaction
from django.db.models.constants import LOOKUP_SEP
from django.db.models.functions import Cast

from sync import generic
from sync.archive import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ArchiveWriter,
    MemberSpool,
    WrittenArchive,
    archive_suffix,
)
from sync.columns import (
    POSTGRESQL_TEXT_TYPES,
    postgresql_texts,
    read_columns,
    reads_datetimes_as_text,
    utc_datetime_texts,
)
from sync.conf import sync_settings
from sync.errors import SyncError
from sync.generic import DanglingCheck, DanglingReference, GenericPart, NulledReferences
from sync.jobs.reporter import JobReporter
from sync.models import BackupRecord
from sync.records import RecordEncoder, UnwritableValue, dumps_line, json_key
from sync.schema import (
    SchemaError,
    SyncModel,
    default_models,
    key_paths,
    plan_models,
    resolve_tables,
    with_dependencies,
)

CHUNK = 2000
PRODUCER_VERSION = "0.1.0"
# An export's kind names its archive (``…Z-full.backup.tar.gz``) and is in its index.
KIND = re.compile(r"[a-z][a-z_]{0,19}")

# Narrows the rows of a table an export writes (the incremental export's "changed since");
# given the table's plan and all its rows, it returns a queryset of the same model.
TableFilter = Callable[[SyncModel, models.QuerySet], models.QuerySet]


class ExportError(SyncError):
    """An export that cannot run; the message says why."""


def select_models(
    tables: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    dependencies: bool = False,
) -> list[type[models.Model]]:
    """The models an export (or import) works on, from the names a user gave."""
    try:
        chosen = resolve_tables(tables) if tables else default_models()
        if dependencies:
            chosen = with_dependencies(chosen)
        if exclude:
            excluded = set(resolve_tables(exclude))
            chosen = [m for m in chosen if m not in excluded]
    except SchemaError as exc:
        raise ExportError(str(exc)) from exc
    if not chosen and not tables:
        raise ExportError("No tables to export: name them (--tables) or set SYNC_DEFAULT_APPS.")
    if not chosen:
        raise ExportError("No tables left to export.")
    return chosen


@contextmanager
def read_snapshot(using: str) -> Iterator[None]:
    """One read-only transaction, so every table is read as of the same moment.

    Inside a caller's transaction the view is the caller's: a transaction's isolation level
    can only be chosen before its first query.
    """
    connection = connections[using]
    outer = connection.in_atomic_block
    with transaction.atomic(using=using):
        if not outer:
            start_snapshot(connection)
        yield


def start_snapshot(connection) -> None:
    """Make the transaction just begun by ``atomic()`` read one snapshot, taken now."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute("SELECT 1")  # the snapshot is taken at the first query
        elif connection.vendor == "mysql":
            # Django runs MySQL sessions at READ COMMITTED, where every statement sees the
            # latest commits. SET TRANSACTION (no SESSION) sets the level of the next
            # transaction only, so the session keeps its own level afterwards.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        elif connection.vendor == "sqlite":
            # A deferred BEGIN takes its snapshot at the first read (in WAL mode; in rollback
            # journal mode the read lock keeps every writer out instead): read now.
            cursor.execute("SELECT 1 FROM sqlite_master LIMIT 1")


def archive_name(kind: str, compression: str, now: datetime) -> str:
    """The archive's name before numbering: ``20261124T213000Z-full.backup.tar.gz``."""
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{kind}{archive_suffix(compression)}"


def database_version(using: str) -> str:
    connection = connections[using]
    try:
        return ".".join(str(part) for part in connection.get_database_version())
    except Exception:  # some backends cannot say; the archive is still valid without it
        return ""


@dataclass
class WrittenExport:
    """What ``write_archive`` wrote: the index's table entries, the archive (its final name,
    size and hash), and per table the generic references that named no row, written as null
    (see sync.generic)."""

    entries: list[dict]
    archive: WrittenArchive
    nulled: dict[str, NulledReferences] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {entry["model"]: entry["count"] for entry in self.entries}


def check_kind(kind: str) -> None:
    if not (isinstance(kind, str) and KIND.fullmatch(kind)):
        raise ExportError(
            f"Export kind {kind!r} is not a word of at most 20 lowercase letters "
            f"(it names the archive), e.g. 'full'."
        )


def table_rows(plan: SyncModel, using: str, table_filter: TableFilter | None) -> models.QuerySet:
    """The rows of ``plan``'s table an export writes: all of them, or the filter's."""
    rows = plan.model._base_manager.using(using)
    return rows if table_filter is None else table_filter(plan, rows)


def write_archive(
    backup: BackupRecord,
    path: Path,
    reporter: JobReporter,
    table_filter: TableFilter | None = None,
) -> WrittenExport:
    """Write the archive ``backup`` describes (tables, compression, secrets) to ``path``, or
    the next free numbered name if another export took it meanwhile.

    Every table is read in one snapshot of ``backup.database``; no archive appears unless it
    is complete (a failure or a cancel leaves no file)."""
    using = backup.database
    plans = plan_models(resolve_tables(backup.tables), backup.include_secrets)
    with ArchiveWriter(path, backup.compression, backup.level) as writer:
        reporter.keep_fresh(writer.working_paths)
        with read_snapshot(using):
            total = sum(table_rows(p, using, table_filter).count() for p in plans)
            reporter.phase("reading", total=total)
            entries = []
            nulled = {}
            for plan in plans:
                reporter.table(plan.label)
                spool = writer.add_table(plan.label)
                nulled[plan.label] = write_table(plan, spool, using, reporter, table_filter)
                entries.append(table_entry(plan, spool))
        index = build_index(backup, entries, using, backup.compression, backup.include_secrets)
        reporter.table("")
        reporter.phase("writing" if backup.compression == "none" else "compressing")
        archive = writer.finish(index, check=reporter.check_cancelled)
    nulled = {label: found for label, found in nulled.items() if found.count}
    return WrittenExport(entries, archive, nulled)


def write_table(
    plan: SyncModel,
    spool: MemberSpool,
    using: str,
    reporter: JobReporter,
    table_filter: TableFilter | None = None,
) -> NulledReferences:
    """Write every row of ``plan``'s table to ``spool``, one JSON line per record; return the
    generic references that named no row, written as null (others are refused).

    This is the hot loop of an export, so it works a chunk at a time and column by column:
    Django's SQL and converters, without Django's per-row machinery (see ``read_columns``).
    """
    encoder = RecordEncoder(plan)
    connection = connections[using]
    text_columns = columns_read_as_text(plan, encoder, connection)
    times = columns_of_type(plan.model, encoder.lookups, "TimeField")
    floats = columns_of_type(plan.model, encoder.lookups, "FloatField")
    floats += columns_of_type(plan.model, encoder.lookups, "DecimalField")
    lookups: list = [
        Cast(lookup, models.TextField()) if position in text_columns else lookup
        for position, lookup in enumerate(encoder.lookups)
    ]
    lookups += ["pk"] if plan.m2m_fields else []
    queryset = table_rows(plan, using, table_filter).order_by("pk")
    queryset = queryset.values_list(*generic.lookups(lookups))
    names = encoder.names + [f.name for f in plan.m2m_fields]
    dangling = DanglingCheck.of(plan, names)
    nulled = NulledReferences()
    for columns in read_columns(queryset, CHUNK):
        columns = generic.fold(lookups, columns, using)
        for position, convert in text_columns.items():
            try:
                columns[position] = convert(columns[position])
            except ValueError:
                refuse_unreadable_texts(plan, encoder, columns, position, convert)
                raise
        for position in times:
            columns[position] = time_texts(columns[position])
        for position in floats:
            refuse_non_finite(plan, encoder, columns, position)
        values = encoder.field_columns(columns)
        if plan.m2m_fields:
            pks = columns[-1]
            for f in plan.m2m_fields:
                values.append(sorted_related_keys(m2m_keys(f, pks, using), pks))
        if dangling is not None:
            try:
                dangling.apply(values, nulled)
            except DanglingReference as exc:
                raise ExportError(
                    f"{exc}: a dangling generic reference. Delete or mend that row, or leave "
                    f"its table out (--exclude {plan.label})."
                ) from exc
        count = len(columns[0])
        write_lines(spool, encode_lines(plan, names, values))
        reporter.advance(count)
    return nulled


def columns_read_as_text(
    plan: SyncModel, encoder: RecordEncoder, connection
) -> dict[int, Callable[[list], list]]:
    """The columns to read as text, by position, each with the function turning its text into
    what the record holds (ValueError for a value that cannot be, see
    ``refuse_unreadable_texts``): datetimes on SQLite and PostgreSQL (in UTC), and on
    PostgreSQL dates, times and durations too.

    The database turns a datetime into text cheaply; building a Python datetime from it (in
    the driver and in Django) and writing it back out as text costs more than anything else in
    a typical table. ``utc_datetime_texts`` rewrites the text as the archive writes datetimes.
    PostgreSQL holds dates, times and intervals Python does not: read in the driver, one fails
    the whole export without naming its record (``postgresql_texts``).
    """
    if not reads_datetimes_as_text(connection):
        return {}
    postgresql = connection.vendor == "postgresql"
    columns = {}
    for f, (_, start, end) in zip(plan.fields, encoder.slots, strict=True):
        internal_type = f.get_internal_type()
        if end - start != 1 or hasattr(f, "from_db_value"):
            continue
        if internal_type == "DateTimeField":
            columns[start] = partial(utc_datetime_texts, connection=connection)
        elif postgresql and internal_type in POSTGRESQL_TEXT_TYPES:
            columns[start] = postgresql_texts(internal_type, connection)
    return columns


def columns_of_type(model: type[models.Model], lookups: list, internal_type: str) -> list:
    """Positions of the columns read with ``lookups`` whose field is of ``internal_type`` (a
    generic reference's column holds keys: of none)."""
    return [
        position
        for position, lookup in enumerate(lookups)
        if type(lookup) is not GenericPart
        and lookup_field(model, lookup).get_internal_type() == internal_type
    ]


def time_texts(column: list) -> list:
    """Times of day as ``isoformat`` text: orjson (3.13) writes microseconds 10000 to 99999
    with five digits, so 0.012 s past the second would read back as 0.12 s."""
    return [None if t is None else t.isoformat() for t in column]


def refuse_non_finite(
    plan: SyncModel, encoder: RecordEncoder, columns: list, position: int
) -> None:
    """Refuse a NaN or an infinity: JSON has neither (orjson writes ``null``), so the archive
    would lose the value. A decimal one (PostgreSQL's numeric holds NaN and ±Infinity) would be
    written as text, but no import could write it back, to any database."""
    for row, value in enumerate(columns[position]):
        if value is None:
            continue
        if type(value) is float:
            if math.isfinite(value):
                continue
            reason = "which an archive cannot hold (JSON has no NaN or infinity)."
        elif not isinstance(value, Decimal) or value.is_finite():
            continue
        else:
            reason = "which no import can write back (a DecimalField holds finite numbers only)."
        values = encoder.field_columns(columns)
        record = {name: column[row] for name, column in zip(encoder.names, values, strict=True)}
        name = next(name for name, start, end in encoder.slots if start <= position < end)
        raise ExportError(
            f"{plan.label} {json_key(plan.key_of(record))!r}: field {name!r} holds {value}, "
            f"{reason}"
        )


# Why a value read as text is refused, by its field's internal type.
UNREADABLE = {
    "DateTimeField": "outside the years 1 to 9999 that an archive's datetimes hold",
    "DateField": "outside the years 1 to 9999 that an archive's dates hold",
    "TimeField": "past the 23:59:59.999999 that an archive's times of day reach",
    "DurationField": "beyond the 999,999,999 days either way that an archive's durations hold",
}


def refuse_unreadable_texts(
    plan: SyncModel,
    encoder: RecordEncoder,
    columns: list,
    position: int,
    convert: Callable[[list], list],
) -> None:
    """Refuse a value read as text (``columns_read_as_text``) that Python cannot hold, naming
    its record: PostgreSQL holds datetimes and dates from 4713 BC to past the year 10000 and
    ±infinity, intervals of any number of days and the time 24:00:00 (written by SQL or another
    program). No archive can hold such a value, and an import could not write it back."""
    for row, value in enumerate(columns[position]):
        try:
            convert([value])
        except ValueError:
            values = encoder.field_columns(columns)
            record = {name: column[row] for name, column in zip(encoder.names, values, strict=True)}
            f, name = next(
                (f, name)
                for f, (name, start, end) in zip(plan.fields, encoder.slots, strict=True)
                if start <= position < end
            )
            raise ExportError(
                f"{plan.label} {json_key(plan.key_of(record))!r}: field {name!r} holds {value!r}, "
                f"{UNREADABLE[f.get_internal_type()]}. Mend that row, or leave its table out "
                f"(--exclude {plan.label})."
            ) from None


def lookup_field(model: type[models.Model], lookup: str) -> models.Field:
    """The field an ORM lookup such as ``event__project__domaincode`` ends at."""
    *relations, name = lookup.split(LOOKUP_SEP)
    for relation in relations:
        model = model._meta.get_field(relation).related_model
    return model._meta.get_field(name)


def encode_lines(plan: SyncModel, names: list[str], values: list[list]) -> list[bytes]:
    """The JSON lines of a chunk's records (``values``: one list per field), or an
    ExportError naming the first record an import would refuse: a value that cannot be
    written exactly, or a line over ``SYNC_MAX_LINE_SIZE``."""
    limit = sync_settings.SYNC_MAX_LINE_SIZE
    rows = list(zip(*values, strict=True))
    try:
        lines = [dumps_line(dict(zip(names, row, strict=True))) for row in rows]
    except UnwritableValue:
        lines = []
    if len(lines) == len(rows) and max(map(len, lines), default=0) <= limit:
        return lines
    for row in rows:  # name the record (a rare, slow path)
        record = dict(zip(names, row, strict=True))
        try:
            size = len(dumps_line(record))
        except UnwritableValue as exc:
            problem = str(exc)
        else:
            if size <= limit:
                continue
            problem = f"its line is {size} bytes, over SYNC_MAX_LINE_SIZE ({limit})"
        key = json_key(plan.key_of(record))
        raise ExportError(f"{plan.label} {key!r}: {problem}.")
    raise AssertionError("no record of the chunk is unwritable")


def write_lines(spool: MemberSpool, lines: list[bytes]) -> None:
    """Write a chunk's lines with one write and one hash update instead of one per line."""
    if not lines:
        return
    spool.write_line(b"".join(lines))
    spool.count += len(lines) - 1  # write_line counted the block as one line


def m2m_keys(f: models.ManyToManyField, pks: list, using: str) -> dict:
    """Sync keys of the rows each of ``pks`` is related to through ``f`` (lists in no order).

    One query for all of ``pks``, by range: rows are read in primary-key order, so a chunk's
    rows are the rows between its first and last key (rows of other sources in that range
    are harmless, they are never looked up).
    """
    through = f.remote_field.through
    source, target = f.m2m_field_name(), f.m2m_reverse_field_name()
    paths = key_paths(f.related_model, f"{target}__")
    result: dict = defaultdict(list)
    if not pks:
        return result
    rows = through._base_manager.using(using).filter(
        **{f"{source}_id__gte": min(pks), f"{source}_id__lte": max(pks)}
    )
    if len(paths) == 1:
        for source_pk, key in rows.values_list(f"{source}_id", *paths).iterator(CHUNK):
            result[source_pk].append(key)
        return result
    read = rows.values_list(f"{source}_id", *generic.lookups(paths))
    for source_pks, *parts in read_columns(read, CHUNK):
        keys = zip(*generic.fold(paths, parts, using), strict=True)
        for source_pk, key in zip(source_pks, keys, strict=True):
            result[source_pk].append(json_key(key))
    return result


def sorted_related_keys(by_source: dict, pks: list) -> list[list]:
    """For each of ``pks``, its related keys in archive order."""
    column = []
    for pk in pks:
        keys = by_source.get(pk)
        if not keys:
            column.append([])
        elif len(keys) == 1:
            column.append(keys)
        else:
            column.append(sorted(keys, key=sort_key))
    return column


def sort_key(value) -> tuple:
    """Orders sync keys as their parts compare (``"teen"`` before ``"teen group"``)."""
    parts = value if isinstance(value, list) else [value]
    return tuple((p is not None, type(p).__name__, p) for p in parts)


def table_entry(plan: SyncModel, spool: MemberSpool) -> dict:
    return {
        "model": plan.label,
        "db_table": plan.table,
        "key_fields": list(plan.key_fields),
        "fields": plan.field_types(),
        "references": {name: ref.target._meta.label for name, ref in plan.references.items()}
        | {f.name: f.related_model._meta.label for f in plan.m2m_fields},
        **generic.index_entry(plan),
        "count": spool.count,
        "member": spool.name,
        "size": spool.size,
        "sha256": spool.sha256.hexdigest(),
    }


def build_index(
    backup: BackupRecord,
    entries: list[dict],
    using: str,
    compression: str,
    include_secrets: bool,
) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backup_id": str(backup.backup_id),
        "kind": backup.kind,
        "created_at": backup.started_at.astimezone(UTC).replace(microsecond=0).isoformat(),
        "source": {
            "vendor": connections[using].vendor,
            "version": database_version(using),
            "alias": using,
        },
        "producer": {
            "name": "crearis-sync",
            "version": PRODUCER_VERSION,
            "django": django.get_version(),
            "project": settings.ROOT_URLCONF.split(".")[0],
        },
        "compression": compression,
        "include_secrets": include_secrets,
        "tables": entries,
        "total_records": sum(e["count"] for e in entries),
    }
