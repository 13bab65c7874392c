"""Checking an archive without trusting it: every member, checksum and record line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from sync.archive import ArchiveError, ArchiveIndex, ArchiveReader
from sync.records import record_checker


@dataclass
class VerifyReport:
    path: Path
    index: ArchiveIndex
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def verify_archive(path: Path | str, max_member_size: int | None = None) -> VerifyReport:
    """Read the whole archive as a stream and check it; raise ArchiveError at the first problem.

    Checks: format and version, every listed member present once and nothing else, member types
    and names (no links, no absolute or '..' paths), sizes and sha256, every line a JSON record
    with the index's fields and JSON types, and the record counts.
    """
    path = Path(path)
    with ArchiveReader(path, max_member_size) as reader:
        report = VerifyReport(path, reader.index)
        for entry, lines in reader.tables():
            count = 0
            check_record_shape = record_checker(entry.fields)
            for number, line in enumerate(lines, start=1):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ArchiveError(
                        f"{entry.member}, line {number}: not valid JSON ({exc})."
                    ) from exc
                problem = check_record_shape(record)
                if problem:
                    raise ArchiveError(f"{entry.member}, line {number}: {problem}.")
                count += 1
            if count != entry.count:
                raise ArchiveError(
                    f"{entry.member} holds {count} records, the index says {entry.count}."
                )
            report.counts[entry.label] = count
    return report
