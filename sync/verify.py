"""Checking an archive without trusting it: every member, checksum and record line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync.archive import (
    ArchiveError,
    ArchiveIndex,
    ArchiveReader,
    OpenableArchive,
    ReadLimits,
    repeated_name,
)
from sync.fieldtypes import INTEGER_FIELDS

# The deepest a JSON field's value may nest ([] and {} are one level). Deep enough for any real
# document; shallow enough that the standard library's recursive JSON code (Django's
# JSONField, and the fallbacks of sync.records) handles it well within Python's recursion
# limit, and below orjson's parser limit of 1024. The export refuses deeper values, so it
# never writes what this check refuses.
JSON_MAX_DEPTH = 500

# JSON types an archive may hold for a field, by Django's internal type (None: anything).
_STRING = (str,)
_JSON_TYPES: dict[str, tuple[type, ...] | None] = {
    **dict.fromkeys(INTEGER_FIELDS, (int,)),
    "BooleanField": (bool,),
    "FloatField": (int, float),
    "DecimalField": (str, int),
    "JSONField": None,
    "ForeignKey": _STRING,  # most sync keys; other ones are checked by _is_sync_key
    "OneToOneField": _STRING,
    "ManyToManyField": (list,),  # of sync keys
}
_REFERENCES = frozenset({"ForeignKey", "OneToOneField"})
# What a sync key of one part may be, and a part of a longer one (exact types: orjson gives
# no subclasses). A part may also be a list: the key of the row a generic reference in the key
# names (see sync.generic), nested at most _KEY_MAX_NESTING lists deep (generic references
# nest at most 8 deep in a key).
_KEY_PARTS = frozenset({str, int, float, bool})
_KEY_PARTS_OR_NULL = _KEY_PARTS | {type(None)}
_KEY_MAX_NESTING = 16


def json_types_for(internal_type: str) -> tuple[type, ...] | None:
    return _JSON_TYPES.get(internal_type, _STRING)


def _is_sync_key(value: Any) -> bool:
    """A flattened sync key as a foreign key or many-to-many list holds it: a scalar, or a
    list of two or more parts."""
    kind = type(value)
    if kind in _KEY_PARTS:
        return True
    return kind is list and len(value) > 1 and _are_key_parts(value)


def _is_generic_key(value: Any) -> bool:
    """What a generic reference's id field holds: the key of the row it names, always a list
    (even of one part)."""
    return type(value) is list and len(value) > 0 and _are_key_parts(value)


def _are_key_parts(parts: list, nesting: int = 0) -> bool:
    """Whether every part is a scalar, null, or a generic reference's key (a list of parts)."""
    if _KEY_PARTS_OR_NULL.issuperset(map(type, parts)):
        return True
    return nesting < _KEY_MAX_NESTING and all(
        type(part) in _KEY_PARTS_OR_NULL
        or (type(part) is list and len(part) > 0 and _are_key_parts(part, nesting + 1))
        for part in parts
    )


def _kind(value: Any) -> str:
    """What a value that is not a key is, for a message."""
    if type(value) is list:
        odd = [part for part in value if type(part) not in _KEY_PARTS_OR_NULL]
        if odd and type(odd[0]) is not list:
            return f"a list with {_kind(odd[0])} in it"
        return "a list"
    return {dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def nesting_depth(value: Any) -> int:
    """How deep a JSON value nests (a scalar 0, ``[]`` 1, ``[{}]`` 2), without recursion."""
    depth = 0
    level = [value]
    while level:
        containers = [v for v in level if type(v) is list or type(v) is dict]
        if not containers:
            break
        depth += 1
        level = [item for v in containers for item in (v.values() if type(v) is dict else v)]
    return depth


def _brackets(line: bytes) -> int:
    """At least how deep anything in ``line`` nests (brackets in strings count too)."""
    return line.count(b"[") + line.count(b"{")


def line_checker(
    fields: dict[str, str], generic: Iterable[str] = ()
) -> Callable[[bytes, Any], str | None]:
    """A function telling why a line, parsed as ``record``, is not a record of a table with
    these fields (None: it is): its fields and their JSON types, sync keys where references
    belong, JSON values nested at most ``JSON_MAX_DEPTH`` deep, no name twice in an object.
    ``generic``: fields holding generic references, written as the referenced row's key (a
    list), whatever the field's own type.

    This runs for every line of an archive: the common case costs one dict comparison, a type
    test per field, and orjson writing the record back; only long lines with many brackets
    are measured for depth.
    """
    generic = list(generic)
    typed = [(name, json_types_for(t), t) for name, t in fields.items() if name not in generic]
    typed = [(name, allowed, t) for name, allowed, t in typed if allowed is not None]
    m2m = [name for name, t in fields.items() if t == "ManyToManyField"]
    json_fields = [name for name, t in fields.items() if t == "JSONField"]
    names = fields.keys()
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE

    def check(line: bytes, record: Any) -> str | None:
        if type(record) is not dict:
            return "a record is not a JSON object"
        if record.keys() != names:
            extra = sorted(record.keys() - names)
            missing = sorted(names - record.keys())
            return f"fields differ from the index (extra {extra}, missing {missing})"
        for name, allowed, internal_type in typed:
            value = record[name]
            if value is None or type(value) in allowed:
                continue
            if internal_type not in _REFERENCES:
                return f"field {name!r} holds {type(value).__name__}, expected {internal_type}"
            if not _is_sync_key(value):
                return f"field {name!r} holds {_kind(value)}, expected a sync key or null"
        for name in m2m:
            if record[name] is None:  # not "no links": an export writes []
                return f"field {name!r} holds null, expected a list of sync keys"
            for item in record[name]:
                if type(item) is not str and not _is_sync_key(item):
                    return f"field {name!r}: an item of its list is {_kind(item)}, not a sync key"
        for name in generic:
            value = record[name]
            if value is not None and not _is_generic_key(value):
                return f"field {name!r} holds {_kind(value)}, expected a key (a list) or null"
        if json_fields and len(line) > 2 * JSON_MAX_DEPTH and _brackets(line) > JSON_MAX_DEPTH:
            for name in json_fields:
                depth = nesting_depth(record[name])
                if depth > JSON_MAX_DEPTH:
                    return f"field {name!r} is nested {depth} levels deep, over {JSON_MAX_DEPTH}"
        try:
            if dumps(record, option=option) == line:
                return None  # orjson writes no name twice
        except orjson.JSONEncodeError:  # nested deeper than orjson writes
            pass
        name = repeated_name(line)
        return None if name is None else f"{name!r} appears twice in one JSON object"

    return check


@dataclass
class VerifyReport:
    path: Path | OpenableArchive
    index: ArchiveIndex
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self, name: str) -> str:
        """The one line that says the archive ``name`` passed (syncverify, the admin)."""
        return (
            f"{name}: OK — format v{self.index.version}, {len(self.counts)} tables, "
            f"{self.total} records, all checksums match."
        )


def verify_archive(
    path: Path | str | OpenableArchive, limits: ReadLimits | None = None
) -> VerifyReport:
    """Read the whole archive as a stream and check it; raise ArchiveError at the first problem.

    Checks: format and version, the index's fields, every listed member present once and
    nothing else, member types and names (no links, no absolute or '..' paths), sizes and
    sha256, line lengths, every line a JSON record with the index's fields and JSON types, no
    name twice in one object, JSON values nested at most ``JSON_MAX_DEPTH`` deep, and the
    record counts.
    """
    with ArchiveReader(path, limits) as reader:
        report = VerifyReport(reader.source, reader.index)
        for entry, lines in reader.tables():
            count = verify_lines(entry.member, entry.fields, lines, entry.generic)
            if count != entry.count:
                raise ArchiveError(
                    f"{entry.member} holds {count} records, the index says {entry.count}."
                )
            report.counts[entry.label] = count
    return report


def verify_lines(
    member: str, fields: dict[str, str], lines: Iterable[bytes], generic: Iterable[str] = ()
) -> int:
    """Check a member's lines against its table's fields; return how many there are."""
    check = line_checker(fields, generic)
    loads = orjson.loads
    count = 0
    for count, line in enumerate(lines, start=1):
        try:
            problem = check(line, loads(line))
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(
                f"{member}, line {count}: not valid JSON ({exc}).", member=member, line=count
            ) from exc
        if problem:
            raise ArchiveError(f"{member}, line {count}: {problem}.", member=member, line=count)
    return count


POLL_SECONDS = 0.2


class VerifyProcess:
    """``verify_archive`` in a separate Python process, started at once; ``result()`` waits
    and raises ArchiveError if the archive is not sound.

    A plain subprocess (``python -m sync.verify``), not multiprocessing: it needs no pickling,
    never re-imports the caller's main module, and works inside daemonic Celery workers. It
    ends with its parent, however the parent ends: the parent holds the child's stdin open and
    never writes to it, so the child sees the end of its input only when the parent is gone.
    """

    def __init__(self, path: Path | str, max_member_size: int | None = None):
        limits = ReadLimits.from_settings(max_member_size)
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sync.verify",
                str(path),
                str(limits.max_member_size),
                str(limits.max_line_size),
                EXIT_WITH_PARENT,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            # A process group of its own: a Ctrl-C at the terminal reaches the import, which
            # decides what it means and stops the check (``stop``), not the check while its
            # interpreter starts, before it could ignore SIGINT. It still ends with its
            # parent (EXIT_WITH_PARENT).
            process_group=0,
        )

    def result(self, waiting: Callable[[], None] | None = None) -> None:
        """Wait for the verdict; ``waiting`` is called every ``POLL_SECONDS`` meanwhile and
        may raise to stop waiting (a cancelled job; ``stop()`` then ends the checker)."""
        out, err = self._wait(waiting)
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
        self._wait()

    def _wait(self, waiting: Callable[[], None] | None = None) -> tuple[bytes, bytes]:
        """The child's output once it has ended (``waiting``: see ``result``). Its stdin is
        closed only then (``communicate`` would close it first, which tells the child its
        parent is gone)."""
        stdin, self.process.stdin = self.process.stdin, None
        try:
            while True:
                try:
                    return self.process.communicate(timeout=waiting and POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    waiting()
        finally:
            if stdin is not None:
                stdin.close()


EXIT_WITH_PARENT = "--exit-with-parent"


def _exit_at_end_of_input() -> None:
    def watch() -> None:
        # The file descriptor, not sys.stdin: a daemon thread blocked inside a buffered
        # reader's lock makes the interpreter's own shutdown fail.
        while os.read(0, 4096):
            pass
        os._exit(2)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    # Run by hand, in the terminal's process group: Ctrl-C is for the import to decide on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if argv[-1:] == [EXIT_WITH_PARENT]:
        _exit_at_end_of_input()
        argv = argv[:-1]
    path, max_member_size, max_line_size = argv
    try:
        verify_archive(path, ReadLimits(int(max_member_size), int(max_line_size)))
    except ArchiveError as exc:
        print(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
