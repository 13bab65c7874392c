"""The write side of an import: a gate that holds writes until the archive is verified, and
plain-SQL inserts, updates and M2M changes."""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings
from django.core.management.color import no_style
from django.db import DatabaseError, models
from django.utils import timezone

from sync.fieldtypes import INTEGER_FIELDS, TEXT_FIELDS
from sync.jobs.reporter import JobReporter

if TYPE_CHECKING:
    from sync.tablecolumns import AbsentField, TableColumns

WRITE_BUFFER_ROWS = 20000


class Verdict(Protocol):
    def result(self, waiting: Callable[[], None] | None = None) -> object: ...


class WriteGate:
    """Holds writes back until the archive has passed verification.

    Verification reads the whole archive; it may run in another process (``verdict``, whose
    ``result()`` raises if the archive is bad) while the import reads and compares, so an
    import that changes little costs about one read of the archive, not two. Until the verdict
    is in, writes wait in a list (at most ``WRITE_BUFFER_ROWS`` rows, then the gate waits);
    a failed verification raises before the first write. Without a verdict, writes go
    straight through (the caller verified already).
    """

    def __init__(self, verdict: Verdict | None = None, reporter: JobReporter | None = None):
        self.verdict = verdict
        self.reporter = reporter or JobReporter()
        self.pending: list[Callable[[], None]] = []
        self.rows = 0

    def submit(self, write: Callable[[], None], rows: int) -> None:
        if self.verdict is None:
            write()
            return
        self.pending.append(write)
        self.rows += rows
        if self.rows >= WRITE_BUFFER_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.verdict is not None:
            verdict, self.verdict = self.verdict, None
            with self.reporter.stage("verifying"):
                # raises the verification's ArchiveError, or JobCancelled while it waits
                verdict.result(waiting=self.reporter.check_cancelled)
        pending, self.pending, self.rows = self.pending, [], 0
        if not pending:
            return
        with self.reporter.stage("writing"):
            for write in pending:
                write()

    def raise_if_unverified(self) -> None:
        """After a failure: if the archive itself is bad, raise that instead."""
        if self.verdict is not None:
            verdict, self.verdict = self.verdict, None
            self.pending = []
            verdict.result(waiting=self.reporter.check_cancelled)


class RowWriter:
    """The writes of an import, in plain SQL: no ``save()``, no signals, no ``auto_now``.

    Parameters are prepared per column (``db_value_preparer``); new rows and M2M links go in
    with ``COPY`` on PostgreSQL and ``executemany`` elsewhere.
    """

    def __init__(self, connection):
        self.connection = connection
        self.explicit_pk_models: list[type[models.Model]] = []

    def insert_rows(self, table: TableColumns, rows: list[dict]) -> None:
        """INSERT new rows (values by attname); fields the archive lacks get what
        ``table.absent`` says (a db_default is left to the database)."""
        if not rows:
            return
        fields = table.fields
        absent = [a for a in table.absent if a.fill != a.FILL_DATABASE]
        all_fields = fields + [a.field for a in absent]
        attnames = [f.attname for f in fields]
        params = table.params
        if any(a.field.has_default() and callable(a.field.default) for a in absent):  # uuid4…
            values = [params(row, attnames) + self.fill(absent) for row in rows]
        else:
            filled = self.fill(absent)
            values = [params(row, attnames) + filled for row in rows]
        self.bulk_insert(table.table, [f.column for f in all_fields], values)
        if table.writes_pk and table.model not in self.explicit_pk_models:
            self.explicit_pk_models.append(table.model)

    def fill(self, absent: list[AbsentField]) -> list:
        """Query parameters for fields a new row's record lacks."""
        now = timezone.now()
        return [
            a.field.get_db_prep_save(
                now if a.fill == a.FILL_NOW else a.field.get_default(), self.connection
            )
            for a in absent
        ]

    def bulk_insert(self, table: str, columns: list[str], rows: list[list]) -> None:
        """INSERT ``rows``: with COPY on PostgreSQL (several times faster than a pipelined
        executemany there), with executemany elsewhere."""
        quote = self.connection.ops.quote_name
        table, names = quote(table), ", ".join(quote(c) for c in columns)
        with self.connection.cursor() as cursor:
            if self.connection.vendor == "postgresql":
                self.copy_rows(cursor, table, names, rows)
                return
            marks = ", ".join(["%s"] * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)

    def copy_rows(self, cursor, table: str, names: str, rows: list[list]) -> None:
        """COPY ``rows`` with psycopg's own cursor, whose errors Django does not see: they are
        turned into Django's as everywhere else (``wrap_database_errors``), and cut to their
        first line (psycopg adds the rejected row, which may hold secrets, on the next ones)."""
        try:
            with (
                self.connection.wrap_database_errors,
                cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        except DatabaseError as exc:
            raise type(exc)(f"{database_error_line(exc)} (copying rows into {table})") from exc

    def update_rows(self, table: TableColumns, rows: list[tuple[Any, dict]]) -> None:
        """UPDATE each (pk, values) row; rows are grouped by the columns they set."""
        ops = self.connection.ops
        opts = table.model._meta
        groups: dict[tuple, list] = defaultdict(list)
        for pk, values in rows:
            groups[tuple(values)].append((pk, values))
        with self.connection.cursor() as cursor:
            for attnames, group in groups.items():
                fields = [table.by_attname[a] for a in attnames]
                sets = ", ".join(f"{ops.quote_name(f.column)} = %s" for f in fields)
                sql = (
                    f"UPDATE {ops.quote_name(opts.db_table)} SET {sets} "
                    f"WHERE {ops.quote_name(opts.pk.column)} = %s"
                )
                cursor.executemany(
                    sql,
                    [
                        [
                            *table.params(values, attnames),
                            opts.pk.get_db_prep_value(pk, self.connection),
                        ]
                        for pk, values in group
                    ],
                )

    def write_m2m(self, model, name: str, changes: list[tuple[Any, set, set]]) -> None:
        """Apply (pk, old ids, new ids) changes to one M2M relation, batched."""
        removed = [[pk, t] for pk, old, new in changes for t in old - new]
        added = [[pk, t] for pk, old, new in changes for t in sorted(new - old)]
        if not (removed or added):
            return
        f = model._meta.get_field(name)
        through = f.remote_field.through
        source = through._meta.get_field(f.m2m_field_name()).column
        target = through._meta.get_field(f.m2m_reverse_field_name()).column
        if removed:
            quote = self.connection.ops.quote_name
            with self.connection.cursor() as cursor:
                cursor.executemany(
                    f"DELETE FROM {quote(through._meta.db_table)} "
                    f"WHERE {quote(source)} = %s AND {quote(target)} = %s",
                    removed,
                )
        if added:
            self.bulk_insert(through._meta.db_table, [source, target], added)

    def reset_sequences(self) -> None:
        """After rows were written with their primary keys: sequences past the largest."""
        if not self.explicit_pk_models:
            return
        statements = self.connection.ops.sequence_reset_sql(no_style(), self.explicit_pk_models)
        with self.connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


def database_error_line(exc: Exception) -> str:
    """A database error's first line: the drivers add details on the next ones (PostgreSQL's
    "DETAIL: Failing row contains (…)" quotes the whole row, secrets included)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc.__cause__ or exc).__name__


# Fields whose Python value the database drivers take as it is.
PASSTHROUGH = TEXT_FIELDS | INTEGER_FIELDS | {"BooleanField"}


def db_value_preparer(f: models.Field, connection) -> Callable[[Any], Any] | None:
    """How to turn a decoded value into a query parameter; None when it goes in unchanged.

    ``get_db_prep_save`` per value is most of an import's time, and for text, integers,
    booleans and foreign-key ids it changes nothing.
    """
    target = f.target_field if f.is_relation else f
    if target.get_internal_type() in PASSTHROUGH:
        return None
    if isinstance(f, models.DateTimeField):
        if connection.vendor in ("sqlite", "mysql") and settings.USE_TZ:
            # What their adapt_datetimefield_value does (str() of the naive datetime in the
            # database's zone), without its per-call checks; a UTC value for a UTC database
            # (the usual case) is written in one call.
            db_tz = connection.timezone
            utc_database = db_tz == datetime.UTC

            def prepare(value: datetime.datetime | None) -> str | None:
                if value is None:
                    return None
                if utc_database and value.tzinfo is datetime.UTC:
                    return value.isoformat(" ")[:-6]  # without "+00:00"
                return str(value.astimezone(db_tz).replace(tzinfo=None))

            return prepare
        adapt = connection.ops.adapt_datetimefield_value
        return lambda value: None if value is None else adapt(value)
    return lambda value: f.get_db_prep_save(value, connection)
