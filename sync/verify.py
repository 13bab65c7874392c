"""Checking an archive without trusting it: every member, checksum and record line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync.archive import ArchiveError, ArchiveIndex, ArchiveReader
from sync.fieldtypes import INTEGER_FIELDS

# JSON types an archive may hold for a field, by Django's internal type (None: anything).
_STRING = (str,)
_JSON_TYPES: dict[str, tuple[type, ...] | None] = {
    **dict.fromkeys(INTEGER_FIELDS, (int,)),
    "BooleanField": (bool,),
    "FloatField": (int, float),
    "DecimalField": (str, int),
    "JSONField": None,
    "ForeignKey": None,
    "OneToOneField": None,
    "ManyToManyField": (list,),
}


def json_types_for(internal_type: str) -> tuple[type, ...] | None:
    return _JSON_TYPES.get(internal_type, _STRING)


def record_checker(
    fields: dict[str, str], generic: Iterable[str] = ()
) -> Callable[[Any], str | None]:
    """A function telling why a record does not match a table's field list (None: it does).
    ``generic``: fields holding generic references, written as the referenced row's key (an
    array), whatever the field's own type."""
    typed = [
        (name, (list,), "a key (array)") if name in generic else (name, json_types_for(t), t)
        for name, t in fields.items()
    ]
    typed = [(name, allowed, t) for name, allowed, t in typed if allowed is not None]
    names = fields.keys()

    def check(record: Any) -> str | None:
        if not isinstance(record, dict):
            return "a record is not a JSON object"
        if record.keys() != names:
            extra = sorted(record.keys() - names)
            missing = sorted(names - record.keys())
            return f"fields differ from the index (extra {extra}, missing {missing})"
        for name, allowed, internal_type in typed:
            value = record[name]
            if value is None:
                continue
            if type(value) not in allowed and (
                not isinstance(value, allowed) or isinstance(value, bool)
            ):
                return f"field {name!r} holds {type(value).__name__}, expected {internal_type}"
        return None

    return check


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
            check_record_shape = record_checker(entry.fields, entry.generic)
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


POLL_SECONDS = 0.2


class VerifyProcess:
    """``verify_archive`` in a separate Python process, started at once; ``result()`` waits
    and raises ArchiveError if the archive is not sound.

    A plain subprocess (``python -m sync.verify``), not multiprocessing: it needs no pickling,
    never re-imports the caller's main module, and works inside daemonic Celery workers.
    """

    def __init__(self, path: Path | str, max_member_size: int):
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sync.verify", str(path), str(max_member_size)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def result(self, waiting: Callable[[], None] | None = None) -> None:
        """Wait for the verdict; ``waiting`` is called every ``POLL_SECONDS`` meanwhile and
        may raise to stop waiting (a cancelled job; ``stop()`` then ends the checker)."""
        while True:
            try:
                out, err = self.process.communicate(timeout=waiting and POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                waiting()
        if self.process.returncode == 0:
            return
        message = out.decode(errors="replace").strip()
        if not message:  # the checker itself failed: say how, do not hide it
            lines = err.decode(errors="replace").strip().splitlines()
            message = f"the archive check did not finish ({lines[-1] if lines else 'no output'})"
        raise ArchiveError(message)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


def main(argv: list[str]) -> int:
    # Ctrl-C reaches the terminal's whole process group; the import decides what it means
    # and stops the check itself (VerifyProcess.stop), so the check does not die of it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path, max_member_size = argv
    try:
        verify_archive(path, int(max_member_size))
    except ArchiveError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
