"""The backup archive, format v1: a plain tar file, compressed as a whole.

Members, in this order:

- ``index.json`` — what the archive holds (see ``docs/format.md``);
- ``tables/NNN-app_label.Model.jsonl`` — one per table, one JSON record per line, in
  dependency order.

The index comes first so that reading it never decompresses the data. Writing spools each table
to a temporary file to learn its size and checksum (tar needs the size before the data), then
streams index and members into the compressor. Reading is a single forward pass over a stream:
nothing is extracted to disk, every member's type, name, size and sha256 is checked against the
index.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import lzma
import os
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
import zstandard

from sync.errors import SyncError

FORMAT_NAME = "crearis-sync-archive"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
COMPRESSIONS = ("gz", "bz2", "xz", "zst", "none")
DEFAULT_LEVELS = {"gz": 6, "bz2": 9, "xz": 6, "zst": 3, "none": None}
LEVEL_RANGES = {"gz": (0, 9), "bz2": (1, 9), "xz": (0, 9), "zst": (1, 22)}
INDEX_MAX_SIZE = 64 * 1024 * 1024
COPY_BUFFER = 1024 * 1024
# What may follow a tar's end-of-archive blocks: zeros padding the last record (10 KiB for
# tar's default blocking factor; 1 MiB allows any common one). More is not an archive of ours,
# and reading it all could take as long as the attacker likes.
TRAILER_MAX_SIZE = 1024 * 1024
# A tar header's own extensions (pax records, GNU long names); ours are a few hundred bytes.
EXTENDED_HEADER_MAX_SIZE = 1024 * 1024
# What a damaged or cut-off archive raises while it is read, by tar or by a decompressor
# (lzma and zlib errors are not OSErrors).
READ_ERRORS = (
    tarfile.TarError,
    EOFError,
    OSError,
    lzma.LZMAError,
    zlib.error,
    zstandard.ZstdError,
)


class ArchiveError(SyncError):
    """An archive that cannot be read or trusted; the message names the problem."""


def archive_suffix(compression: str) -> str:
    return ".backup.tar" if compression == "none" else f".backup.tar.{compression}"


def looks_like_backup(name: str) -> bool:
    return any(name.endswith(archive_suffix(c)) for c in COMPRESSIONS)


def numbered(path: Path, number: int) -> Path:
    """The ``number``-th name for an archive: ``path`` itself, then ``-2``, ``-3``, … before
    ``.backup`` (``…Z-full-2.backup.tar.gz``)."""
    if number == 1:
        return path
    stem, dot, suffix = path.name.partition(".backup.")
    return path.with_name(f"{stem}-{number}{dot}{suffix}")


def member_name(position: int, label: str) -> str:
    return f"tables/{position:03d}-{label}.jsonl"


def check_compression(compression: str, level: int | None) -> None:
    """Refuse an unknown compression or a level outside its range (before any work starts)."""
    if compression not in COMPRESSIONS:
        raise ArchiveError(
            f"Unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}."
        )
    if level is not None and compression != "none":
        low, high = LEVEL_RANGES[compression]
        if not low <= level <= high:
            raise ArchiveError(f"--level for {compression} must be between {low} and {high}.")


# -- compression -------------------------------------------------------------------------------


def _compressed_writer(raw: IO[bytes], compression: str, level: int | None) -> IO[bytes]:
    """A writable stream that compresses into ``raw``."""
    if compression == "none":
        return raw
    if compression == "gz":
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0)
    if compression == "bz2":
        import bz2

        return bz2.BZ2File(raw, mode="wb", compresslevel=level)
    if compression == "xz":
        import lzma

        return lzma.LZMAFile(raw, mode="wb", preset=level)
    if compression == "zst":
        # A content checksum, so that a damaged frame fails to decompress (gz, bz2 and xz
        # check their data on their own).
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        return compressor.stream_writer(raw, closefd=False)
    raise ArchiveError(
        f"Unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}."
    )


def detect_compression(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zst"
    return "none"


def _decompressed_reader(raw: IO[bytes], compression: str) -> IO[bytes]:
    """The data of a compressed stream, read to the end of the file: anything after the last
    compressed stream, and a stream cut short, are errors (READ_ERRORS), as gzip's reader has
    it. Python's bz2 and lzma readers skip bytes after a stream that do not start another one,
    and zstandard's reader ends quietly where a frame is cut off."""
    if compression == "none":
        return raw
    if compression == "gz":
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "bz2":
        import bz2

        return _StreamsReader(raw, bz2.BZ2Decompressor)
    if compression == "xz":
        return _StreamsReader(raw, lzma.LZMADecompressor)
    frames = _ZstdFrames(raw)
    reader = zstandard.ZstdDecompressor().stream_reader(frames, read_across_frames=True)
    return _EndChecked(reader, frames.check_end)


class _StreamsReader(io.RawIOBase):
    """One or more bzip2 or xz streams, one after the other to the end of the file (as their
    tools write and read them), decompressed at most ``size`` bytes a read (a bomb stays in
    bounded memory)."""

    def __init__(self, raw: IO[bytes], new_decompressor: Callable[[], Any]):
        self.raw = raw
        self.new_decompressor = new_decompressor
        self.decompressor = new_decompressor()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = len(buffer)
        while True:
            decompressor = self.decompressor
            if decompressor.eof:
                rest = decompressor.unused_data or self.raw.read(COPY_BUFFER)
                if not rest:
                    return 0  # the end of the file, after a complete stream
                # Another stream, or an error (what follows is not one)
                self.decompressor = self.new_decompressor()
                data = self.decompressor.decompress(rest, size)
            elif decompressor.needs_input:
                chunk = self.raw.read(COPY_BUFFER)
                if not chunk:
                    raise EOFError("the compressed data ends before its end-of-stream marker")
                data = decompressor.decompress(chunk, size)
            else:
                data = decompressor.decompress(b"", size)
            if data:
                buffer[: len(data)] = data
                return len(data)


class _ZstdFrames:
    """The compressed bytes of a zstd stream as its reader takes them, followed frame by
    frame and block by block through their headers (the blocks' contents are skipped, not
    decompressed), so that ``check_end`` can tell whether the file ends where a frame does."""

    MAGIC = 0xFD2FB528
    SKIPPABLE = 0x184D2A50  # to 0x184D2A5F: frames of data that is not the stream's

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.pending = b""  # header bytes not complete yet
        self.skip = 0  # bytes of content still to pass over
        self.expect = self._frame_start  # what the next header is
        self.need = 4  # its length
        self.frames = 0
        self.checksum = False

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self._follow(memoryview(data))
        return data

    def _follow(self, data: memoryview) -> None:
        while data:
            if self.skip:
                n = min(self.skip, len(data))
                self.skip -= n
                data = data[n:]
                continue
            n = self.need - len(self.pending)
            self.pending += bytes(data[:n])
            data = data[n:]
            if len(self.pending) == self.need:
                header, self.pending = self.pending, b""
                self.expect(header)

    def _frame_start(self, magic: bytes) -> None:
        number = int.from_bytes(magic, "little")
        if number == self.MAGIC:
            self.frames += 1
            self.expect, self.need = self._descriptor, 1
        elif number & 0xFFFFFFF0 == self.SKIPPABLE:
            # Data beside the archive, for nobody: an export writes none, and passing over it
            # could take as long as its maker wanted (see TRAILER_MAX_SIZE).
            raise zstandard.ZstdError("a skippable frame, which an export never writes")
        else:
            raise zstandard.ZstdError("not a zstd frame")

    def _descriptor(self, descriptor: bytes) -> None:
        flags = descriptor[0]
        single_segment = bool(flags & 0x20)
        self.checksum = bool(flags & 0x04)
        content_size = (1 if single_segment else 0, 2, 4, 8)[flags >> 6]
        dictionary = (0, 1, 2, 4)[flags & 0x03]
        self.skip = (0 if single_segment else 1) + dictionary + content_size
        self.expect, self.need = self._block, 3

    def _block(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        last, kind, size = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3:
            raise zstandard.ZstdError("a reserved block type")
        self.skip = 1 if kind == 1 else size  # an RLE block holds one byte
        if last:
            self.skip += 4 if self.checksum else 0
            self.expect, self.need = self._frame_start, 4

    def check_end(self) -> None:
        """At the end of the file: it must end where a frame does."""
        if self.skip or self.pending or self.expect != self._frame_start or not self.frames:
            raise zstandard.ZstdError("the compressed data ends inside a frame")


class _EndChecked(io.RawIOBase):
    """A stream whose end calls ``check_end`` (which raises if the end is not sound)."""

    def __init__(self, stream: IO[bytes], check_end: Callable[[], None]):
        self.stream = stream
        self.check_end = check_end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.stream.read(len(buffer))
        if not data:
            self.check_end()
            return 0
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


# -- writing -----------------------------------------------------------------------------------


@dataclass
class MemberSpool:
    """One table's records, spooled to a temporary file while its size and hash add up."""

    name: str
    path: Path
    count: int = 0
    size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    _file: IO[bytes] | None = None

    def open(self) -> MemberSpool:
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        return self

    def write_line(self, line: bytes) -> None:
        self._file.write(line)
        self.sha256.update(line)
        self.size += len(line)
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class WrittenArchive:
    """A complete archive: where it went (the name claimed, see ``ArchiveWriter.finish``),
    its size and sha256."""

    path: Path
    size: int
    sha256: str


class ArchiveWriter:
    """Builds an archive under a temporary name and gives it its final name when complete.

    Use as a context manager; an exception (or an interrupt) inside it removes the partial file,
    so a failed export never leaves anything that looks like a backup.
    """

    def __init__(self, final_path: Path, compression: str = "gz", level: int | None = None):
        check_compression(compression, level)
        self.final_path = final_path
        self.compression = compression
        self.level = DEFAULT_LEVELS[compression] if level is None else level
        self.spools: list[MemberSpool] = []
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        # The pid tells remove_leftovers whose it is; the token keeps two writers of one
        # process (threads) apart.
        self.partial_path = final_path.with_name(
            f".{final_path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial"
        )

    def __enter__(self) -> ArchiveWriter:
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmpdir = tempfile.TemporaryDirectory(
            prefix=f".sync-spool-{os.getpid()}-", dir=self.final_path.parent
        )
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for spool in self.spools:
            spool.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
        if exc_type is not None:
            self.partial_path.unlink(missing_ok=True)

    def working_paths(self) -> list[Path]:
        """The files this writer is working on (touched by its job's heartbeat, so that their
        age tells whether the writer is alive: see ``remove_leftovers``)."""
        paths = [Path(self._tmpdir.name)] if self._tmpdir is not None else []
        return [*paths, self.partial_path]

    def add_table(self, label: str) -> MemberSpool:
        name = member_name(len(self.spools) + 1, label)
        spool = MemberSpool(name, Path(self._tmpdir.name) / f"{len(self.spools) + 1:03d}.jsonl")
        self.spools.append(spool.open())
        return spool

    def finish(self, index: dict, check: Callable[[], None] | None = None) -> WrittenArchive:
        """Write index and members into the compressed tar and give the file its final name:
        ``final_path``, or the next free numbered name if another writer took it meanwhile.

        ``check`` is called before each block of member data is compressed; it may raise to
        stop (a cancelled export), which removes the partial file."""
        for spool in self.spools:
            spool.close()
        index_bytes = orjson.dumps(index, option=orjson.OPT_INDENT_2) + b"\n"
        with open(self.partial_path, "wb") as raw:
            hashing = _HashingWriter(raw)
            stream = _compressed_writer(hashing, self.compression, self.level)
            with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                _add_member(tar, INDEX_NAME, len(index_bytes), io.BytesIO(index_bytes))
                for spool in self.spools:
                    with open(spool.path, "rb") as data:
                        _add_member(tar, spool.name, spool.size, _Checked(data, check))
            if stream is not hashing:
                stream.close()
            raw.flush()
            os.fsync(raw.fileno())
        path = claim_name(self.partial_path, self.final_path)
        return WrittenArchive(path, hashing.size, hashing.sha256.hexdigest())


_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


def claim_name(partial: Path, wanted: Path) -> Path:
    """Give the complete file ``partial`` the first free name among ``wanted``, ``wanted-2``,
    …; return it. Never replaces a file: two exports that chose one name in the same second
    (each checked it was free before writing) both keep their archive."""
    number = 1
    while True:
        candidate = numbered(wanted, number)
        try:
            _move_to_free_name(partial, candidate)
        except FileExistsError:
            number += 1
            continue
        return candidate


def _move_to_free_name(partial: Path, name: Path) -> None:
    """Rename ``partial`` to ``name`` in one step, raising FileExistsError if ``name`` exists
    (``os.replace`` would overwrite it)."""
    try:
        os.link(partial, name)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links on this file system (FAT, some network shares): reserve the name,
        # then move the file onto the reservation.
        with open(name, "xb"):
            pass
        os.replace(partial, name)
        return
    partial.unlink()


class _HashingWriter(io.RawIOBase):
    """Passes bytes through to a file, counting and hashing them on the way."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.size = 0
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def close(self) -> None:  # the caller owns the underlying file
        pass


class _Checked:
    """A file read through ``check`` before every read (tar copies members in blocks)."""

    def __init__(self, data: IO[bytes], check: Callable[[], None] | None):
        self.data = data
        self.check = check

    def read(self, size: int = -1) -> bytes:
        if self.check is not None:
            self.check()
        return self.data.read(size)


def _add_member(tar: tarfile.TarFile, name: str, size: int, data: IO[bytes]) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, data)


_LEFTOVER = re.compile(r"^\.(?:sync-spool-.+|.+\.partial)$")


def remove_leftovers(directory: Path, older_than: float) -> list[Path]:
    """Remove spool folders and partial archives in ``directory`` that nothing has touched for
    ``older_than`` seconds: left by writers that were killed. They never look like backups;
    this only frees space.

    Age, not the process id in their name, tells a leftover: the directory may be a volume
    shared by several hosts or containers, where a pid means nothing. A running export's job
    touches its files with every heartbeat (``JobReporter.keep_fresh``)."""
    removed = []
    if not directory.is_dir():
        return removed
    cutoff = time.time() - older_than
    for entry in directory.iterdir():
        if not _LEFTOVER.match(entry.name):
            continue
        try:
            if last_touched(entry) > cutoff:
                continue
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def last_touched(path: Path) -> float:
    """The newest modification time of ``path`` and, for a folder, of what it holds."""
    newest = path.stat().st_mtime
    if path.is_dir():
        for child in path.iterdir():
            newest = max(newest, child.stat().st_mtime)
    return newest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(COPY_BUFFER):
            digest.update(chunk)
    return digest.hexdigest()


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadLimits:
    """How much a reader takes from an archive it does not trust (see docs/format.md)."""

    max_member_size: int
    max_line_size: int

    @classmethod
    def from_settings(cls, max_member_size: int | None = None) -> ReadLimits:
        from sync.conf import sync_settings

        conf = sync_settings
        return cls(max_member_size or conf.SYNC_MAX_MEMBER_SIZE, conf.SYNC_MAX_LINE_SIZE)


def _shown(value: Any) -> str:
    """A value of the index as its JSON, cut short."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:39] + "…"


def _malformed(where: str, name: str, value: Any, expected: str) -> ArchiveError:
    found = "missing" if value is _MISSING else _shown(value)
    return ArchiveError(f"index.json: {where}: {name!r} must be {expected}, not {found}.")


_MISSING = object()
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_text(value: Any) -> bool:
    return type(value) is str and value != ""


def _is_label(value: Any) -> bool:
    return type(value) is str and _LABEL.match(value) is not None


def _is_text_map(value: Any, values: Callable[[Any], bool] = _is_text) -> bool:
    return type(value) is dict and all(_is_text(k) and values(v) for k, v in value.items())


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


# (name, test, what it must be) of the index's fields: required, then optional ones (the
# latter are informative, but a reader showing them must not trip over their type).
_INDEX_FIELDS = (("backup_id", _is_uuid, "a UUID"),)
_INDEX_OPTIONAL = (
    ("kind", _is_text, "a text"),
    ("created_at", _is_text, "a text"),
    ("source", lambda v: type(v) is dict, "an object"),
    ("producer", lambda v: type(v) is dict, "an object"),
    ("compression", _is_text, "a text"),
    ("include_secrets", lambda v: type(v) is bool, "true or false"),
    ("total_records", _is_count, "a non-negative integer"),
)
_TABLE_FIELDS = (
    ("member", lambda v: _is_text(v) and v != INDEX_NAME, "a member name"),
    ("count", _is_count, "a non-negative integer"),
    ("size", _is_count, "a non-negative integer"),
    ("sha256", lambda v: type(v) is str and _SHA256.match(v) is not None, "64 hex digits"),
    (
        "key_fields",
        lambda v: type(v) is list and v != [] and all(map(_is_text, v)),
        "a non-empty list of field names",
    ),
    ("fields", lambda v: _is_text_map(v) and v != {}, "an object of field names and types"),
)
_TABLE_OPTIONAL = (
    ("db_table", _is_text, "a text"),
    ("references", lambda v: _is_text_map(v, _is_label), "an object of field names and labels"),
    ("generic_references", lambda v: type(v) is dict, "an object"),  # see check_generic
)


def _check_fields(data: dict, where: str, required: tuple, optional: tuple = ()) -> None:
    for name, test, expected in required:
        if not test(value := data.get(name, _MISSING)):
            raise _malformed(where, name, value, expected)
    for name, test, expected in optional:
        if name in data and not test(value := data[name]):
            raise _malformed(where, name, value, expected)


@dataclass
class TableEntry:
    """One table as the index describes it."""

    label: str
    member: str
    count: int
    size: int
    sha256: str
    key_fields: list[str]
    fields: dict[str, str]
    raw: dict
    # Generic references (see sync.generic): id field → its content type field
    generic: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_index(cls, entry: Any, position: int) -> TableEntry:
        """The entry at ``position`` (1-based) of the index's table list, checked."""
        where = f"table {position}"
        if type(entry) is not dict:
            raise ArchiveError(f"index.json: {where} is not an object.")
        label = entry.get("model", _MISSING)
        if not _is_label(label):
            raise _malformed(where, "model", label, 'a model label such as "content.Event"')
        where = f"table {position} ({label})"
        _check_fields(entry, where, _TABLE_FIELDS, _TABLE_OPTIONAL)
        _check_member_name(entry["member"])
        absent = [name for name in entry["key_fields"] if name not in entry["fields"]]
        if absent:
            raise ArchiveError(f"index.json: {where}: key field {absent[0]!r} is not in 'fields'.")
        table = cls(
            label=label,
            member=entry["member"],
            count=entry["count"],
            size=entry["size"],
            sha256=entry["sha256"],
            key_fields=entry["key_fields"],
            fields=entry["fields"],
            raw=entry,
            generic=entry.get("generic_references", {}),
        )
        table.check_generic()
        return table

    def check_generic(self) -> None:
        """Each generic reference pairs two different fields of the table."""
        for name, ct_field in self.generic.items():
            paired = isinstance(ct_field, str) and ct_field in self.fields and ct_field != name
            if not (paired and name in self.fields):
                raise ArchiveError(
                    f"index.json: table {self.label!r}: generic reference {name!r} → "
                    f"{ct_field!r} does not pair two of its fields."
                )


@dataclass
class ArchiveIndex:
    data: dict
    tables: list[TableEntry]

    @property
    def version(self) -> int:
        return self.data["format_version"]

    @property
    def backup_id(self) -> str:
        return self.data["backup_id"]

    def table(self, label: str) -> TableEntry | None:
        return next((t for t in self.tables if t.label == label), None)


def parse_index(raw: bytes) -> ArchiveIndex:
    """The index, with every field a reader uses checked for its type (a hand-edited index
    is refused here, naming the field, rather than failing later in whatever reads it)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ArchiveError(f"index.json is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ArchiveError(f"index.json does not describe a {FORMAT_NAME} archive.")
    try:
        repeated = repeated_name(raw)
    except RecursionError as exc:  # ours nests four levels
        raise ArchiveError("index.json is nested too deep.") from exc
    if repeated is not None:
        raise ArchiveError(f"index.json gives {repeated!r} twice in one JSON object.")
    version = data.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ArchiveError(
            f"Archive format version {_shown(version)} is not supported: this Crearis Sync "
            f"reads version {FORMAT_VERSION}. Use the Crearis Sync release that wrote it."
        )
    if not isinstance(data.get("tables"), list):
        raise ArchiveError("index.json has no table list.")
    _check_fields(data, "top level", _INDEX_FIELDS, _INDEX_OPTIONAL)
    tables = [TableEntry.from_index(t, n) for n, t in enumerate(data["tables"], start=1)]
    members: set[str] = set()
    models: set[str] = set()
    for table in tables:
        for what, value, seen in (
            ("member", table.member, members),
            ("model", table.label, models),
        ):
            if value in seen:
                raise ArchiveError(f"index.json lists the {what} {value!r} twice.")
            seen.add(value)
    return ArchiveIndex(data, tables)


class _Repeated(Exception):
    pass


def _refuse_repeated_names(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise _Repeated(name)
        seen.add(name)


def repeated_name(line: bytes) -> str | None:
    """A name given twice in one JSON object of ``line`` (a parser keeps one of its values
    silently, and a reader of the raw line may see the other), or None. Slow: the caller asks
    only about lines that orjson would not write as they are."""
    try:
        json.loads(line, object_pairs_hook=_refuse_repeated_names)
    except _Repeated as exc:
        return exc.args[0]
    return None


def _check_member_name(name: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name or "\x00" in name:
        raise ArchiveError(f"Unsafe member name {name!r} (absolute path or '..').")


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular_file(path: Path) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file; an ArchiveError at once if not.

    Opened without blocking and then checked, so that a FIFO (whose opening waits for a writer,
    forever) or a device (endless data) is refused before anything is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ArchiveError(f"Cannot open {path}: {exc.strerror}.") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise ArchiveError(f"{path.name or path} is {kind}, not an archive file.")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _BoundedTarInfo(tarfile.TarInfo):
    """Tar headers as ``tarfile`` reads them, except those it would read without a bound:
    extended headers (pax, GNU long names) are read whole into memory, so they may be at most
    ``EXTENDED_HEADER_MAX_SIZE``; sparse maps are read as long as they go on, so sparse
    members are refused (an export never writes one)."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        # tarfile takes a damaged header (or a cut-off one) after the first member for the end
        # of the archive, and skips it: whatever follows would then pass for padding.
        try:
            return super().frombuf(buf, encoding, errors)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:
            raise tarfile.ReadError(f"a damaged tar header: {exc}") from exc

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED_TYPES and self.size > EXTENDED_HEADER_MAX_SIZE:
            raise ArchiveError(
                f"A tar extended header is {self.size} bytes, over the limit of "
                f"{EXTENDED_HEADER_MAX_SIZE}."
            )
        return super()._proc_member(tarfile_)

    def _proc_sparse(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        raise ArchiveError(f"Member {self.name!r} is not a regular file.")

    def _proc_gnusparse_10(self, next_: tarfile.TarInfo, pax_headers: dict, tarfile_) -> None:
        raise ArchiveError(f"Member {next_.name!r} is not a regular file.")


_EXTENDED_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)

# Member types a reader accepts: plain files only (no links, devices, directories, sparse
# files, whose data is not what their header sizes say).
_REGULAR_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)


class OpenableArchive(Protocol):
    """An archive to read that is not a local path (see sync.storage.ArchiveLocation)."""

    @property
    def name(self) -> str: ...

    def open(self) -> IO[bytes]:
        """A buffered binary stream (``peek`` included) of the archive."""
        ...


class ArchiveReader:
    """A single forward pass over an archive, checking each member as it goes.

    ``reader.index`` is available after opening; ``reader.tables()`` then yields
    ``(entry, lines)`` for every table in order, where ``lines`` yields raw JSON lines and, when
    exhausted, has checked the member's size and sha256. No line longer than
    ``limits.max_line_size`` is read into memory.
    """

    def __init__(self, path: Path | str | OpenableArchive, limits: ReadLimits | None = None):
        # A local path, or anything with ``name`` and ``open()`` (sync.storage.ArchiveLocation:
        # a name in the archive storage, read as a stream).
        self.source = Path(path) if isinstance(path, str | os.PathLike) else path
        self.name = self.source.name
        self.limits = limits or ReadLimits.from_settings()
        self._raw: IO[bytes] | None = None
        self._stream: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None
        self.index: ArchiveIndex | None = None
        self.compression = "none"

    def __enter__(self) -> ArchiveReader:
        if isinstance(self.source, Path):
            self._raw = open_regular_file(self.source)
        else:
            self._raw = self.source.open()
        try:
            self._open()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _open(self) -> None:
        # peek, not read and seek back: a stream from a remote storage cannot seek.
        self.compression = detect_compression(self._raw.peek(6)[:6])
        self._stream = _decompressed_reader(self._raw, self.compression)
        try:
            # In stream mode, opening already reads the first header.
            self._tar = tarfile.open(  # noqa: SIM115 - closed in __exit__
                fileobj=self._stream, mode="r|", tarinfo=_BoundedTarInfo
            )
        except READ_ERRORS as exc:
            raise self._corrupt(exc) from exc
        first = self._next_member()
        if first is None or first.name != INDEX_NAME:
            raise ArchiveError(f"{self.name}: the first member is not {INDEX_NAME}.")
        self.index = parse_index(self._read_small(first, INDEX_MAX_SIZE))

    def __exit__(self, *exc) -> None:
        if self._tar is not None:
            self._tar.close()
        if self._raw is not None:
            self._raw.close()

    def _corrupt(self, exc: BaseException) -> ArchiveError:
        return ArchiveError(f"{self.name} is corrupt or truncated ({exc}).")

    def _next_member(self) -> tarfile.TarInfo | None:
        try:
            member = self._tar.next()
        except READ_ERRORS as exc:
            raise self._corrupt(exc) from exc
        if member is None:
            return None
        _check_member_name(member.name)
        if member.type not in _REGULAR_TYPES:
            raise ArchiveError(f"Member {member.name!r} is not a regular file.")
        if member.size > self.limits.max_member_size:
            raise ArchiveError(
                f"Member {member.name!r} is {member.size} bytes, over the limit of "
                f"{self.limits.max_member_size} (SYNC_MAX_MEMBER_SIZE)."
            )
        return member

    def _read_small(self, member: tarfile.TarInfo, limit: int) -> bytes:
        if member.size > limit:
            raise ArchiveError(f"Member {member.name!r} is too large ({member.size} bytes).")
        try:
            return self._tar.extractfile(member).read()
        except READ_ERRORS as exc:
            raise self._corrupt(exc) from exc

    def tables(self) -> Iterator[tuple[TableEntry, Iterator[bytes]]]:
        """Yield each table with its line stream, in archive order; check for extra members.

        A member is read no further than the size its index gives: its tar header must give
        the same size, and tar reads no more than its header's."""
        expected = {t.member: t for t in self.index.tables}
        seen: set[str] = set()
        while True:
            member = self._next_member()
            if member is None:
                break
            if member.name in seen:
                raise ArchiveError(f"Member {member.name!r} appears twice.")
            seen.add(member.name)
            entry = expected.get(member.name)
            if entry is None:
                raise ArchiveError(f"Member {member.name!r} is not listed in {INDEX_NAME}.")
            if member.size != entry.size:
                raise ArchiveError(
                    f"Member {member.name!r} is {member.size} bytes, the index says {entry.size}."
                )
            yield entry, self._lines(member, entry)
        missing = [name for name in expected if name not in seen]
        if missing:
            raise ArchiveError(f"Member {missing[0]!r} listed in {INDEX_NAME} is missing.")
        self._read_to_end()

    def _read_to_end(self) -> None:
        """Read what follows the last member, so that the decompressor reaches the end of its
        stream and checks its own checksum (gzip CRC-32, bzip2 block CRCs, xz CRC-64, zstd
        content checksum). That check is what covers ``index.json``, which has no sha256 of
        its own. What follows is padding: zeros, at most ``TRAILER_MAX_SIZE`` bytes."""
        read = 0
        try:
            while data := self._stream.read(COPY_BUFFER):
                read += len(data)
                if read > TRAILER_MAX_SIZE or data.count(0) != len(data):
                    raise ArchiveError(f"{self.name} has data after the end of its tar archive.")
        except READ_ERRORS as exc:
            raise self._corrupt(exc) from exc

    def _lines(self, member: tarfile.TarInfo, entry: TableEntry) -> Iterator[bytes]:
        digest = hashlib.sha256()
        readline = self._tar.extractfile(member).readline
        limit = self.limits.max_line_size
        number = 0
        try:
            while line := readline(limit + 1):
                number += 1
                if len(line) > limit:
                    raise ArchiveError(
                        f"{member.name}, line {number}: longer than {limit} bytes, the limit "
                        f"for a record (SYNC_MAX_LINE_SIZE).",
                        member=member.name,
                        line=number,
                    )
                digest.update(line)
                yield line
        except READ_ERRORS as exc:
            raise self._corrupt(exc) from exc
        if digest.hexdigest() != entry.sha256:
            raise ArchiveError(f"Member {member.name!r} fails its sha256 check: it was altered.")


def read_index(path: Path | str | OpenableArchive) -> ArchiveIndex:
    """The archive's index, reading only the head of the archive."""
    with ArchiveReader(path) as reader:
        return reader.index
