"""Where an import's records come from: an archive, or a data file such as the bundled
system data. The importer asks a source for its tables and, table by table, its records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from django.apps import apps

from sync.archive import ArchiveReader, TableEntry
from sync.records import line_loader
from sync.schema import sync_key_fields


@dataclass
class SourceTable:
    """A table of records as a source describes it: label, key fields, field names."""

    label: str
    key_fields: list[str]
    fields: list[str]
    # For a source of JSON lines: the parser of a line. The importer parses lines itself, so
    # that it can leave unparsed those an update skips (see sync.matching.KeyMatcher.read_chunk).
    loads: Callable[[bytes], dict] | None = None
    count: int = 0  # records, as far as the source knows before reading them
    # Generic references (id field → content type field, see sync.generic); None: the source
    # does not say (a data file written for this schema)
    generic: dict[str, str] | None = None


class RecordSource:
    """Where records come from: an archive, or the bundled system data."""

    backup_id: str | None = None

    def table_list(self) -> list[SourceTable]:
        raise NotImplementedError

    def records(self) -> Iterator[tuple[SourceTable, Iterator[dict | bytes]]]:
        """Each table with its records: dicts, or JSON lines when the table has ``loads``."""
        raise NotImplementedError


class ArchiveSource(RecordSource):
    def __init__(self, path: Path | str):
        self.path = Path(path)
        with ArchiveReader(self.path) as reader:
            self.index = reader.index
        self.backup_id = self.index.backup_id

    def table_list(self) -> list[SourceTable]:
        return [_source_table(t) for t in self.index.tables]

    def records(self) -> Iterator[tuple[SourceTable, Iterator[bytes]]]:
        with ArchiveReader(self.path) as reader:
            for entry, lines in reader.tables():
                yield _source_table(entry), lines


def _source_table(entry: TableEntry) -> SourceTable:
    loads = line_loader([n for n, t in entry.fields.items() if t == "JSONField"])
    return SourceTable(
        entry.label, entry.key_fields, list(entry.fields), loads, entry.count, entry.generic
    )


class DataFileSource(RecordSource):
    """``{"tables": {label: [record, …]}}`` — the shape of the bundled system data."""

    def __init__(self, path: Path | str):
        self.data = orjson.loads(Path(path).read_bytes())["tables"]

    def table_list(self) -> list[SourceTable]:
        tables = []
        for label, records in self.data.items():
            names = list(dict.fromkeys(name for record in records for name in record))
            key = list(sync_key_fields(apps.get_model(label)))
            tables.append(SourceTable(label, key, names, count=len(records)))
        return tables

    def records(self) -> Iterator[tuple[SourceTable, Iterator[dict]]]:
        for table in self.table_list():
            yield table, iter(self.data[table.label])
