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

import hashlib
import io
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard

FORMAT_NAME = "crearis-sync-archive"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
COMPRESSIONS = ("gz", "bz2", "xz", "zst", "none")
DEFAULT_LEVELS = {"gz": 6, "bz2": 9, "xz": 6, "zst": 3, "none": None}
LEVEL_RANGES = {"gz": (0, 9), "bz2": (1, 9), "xz": (0, 9), "zst": (1, 22)}
INDEX_MAX_SIZE = 64 * 1024 * 1024
COPY_BUFFER = 1024 * 1024
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


class ArchiveError(Exception):
    """An archive that cannot be read or trusted; the message names the problem."""


def archive_suffix(compression: str) -> str:
    return ".backup.tar" if compression == "none" else f".backup.tar.{compression}"


def looks_like_backup(name: str) -> bool:
    return any(name.endswith(archive_suffix(c)) for c in COMPRESSIONS)


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
    if compression == "none":
        return raw
    if compression == "gz":
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "bz2":
        import bz2

        return bz2.BZ2File(raw, mode="rb")
    if compression == "xz":
        import lzma

        return lzma.LZMAFile(raw, mode="rb")
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)


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


class ArchiveWriter:
    """Builds an archive under a temporary name and renames it into place when complete.

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
        self.partial_path = final_path.with_name(f".{final_path.name}.{os.getpid()}.partial")

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

    def finish(self, index: dict, check: Callable[[], None] | None = None) -> tuple[int, str]:
        """Write index and members into the compressed tar; return (size, sha256) of the file.

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
        os.replace(self.partial_path, self.final_path)
        return hashing.size, hashing.sha256.hexdigest()


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
    def from_index(cls, entry: dict) -> TableEntry:
        try:
            table = cls(
                label=entry["model"],
                member=entry["member"],
                count=int(entry["count"]),
                size=int(entry["size"]),
                sha256=entry["sha256"],
                key_fields=list(entry["key_fields"]),
                fields=dict(entry["fields"]),
                raw=entry,
                generic=dict(entry.get("generic_references", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"index.json: a table entry is malformed ({exc!r}).") from exc
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
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ArchiveError(f"index.json is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ArchiveError(f"index.json does not describe a {FORMAT_NAME} archive.")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ArchiveError(
            f"Archive format version {version!r} is not supported: this Crearis Sync reads "
            f"version {FORMAT_VERSION}. Use the Crearis Sync release that wrote it."
        )
    if not isinstance(data.get("tables"), list):
        raise ArchiveError("index.json has no table list.")
    tables = [TableEntry.from_index(t) for t in data["tables"]]
    names = [t.member for t in tables]
    if len(set(names)) != len(names):
        raise ArchiveError("index.json lists the same member twice.")
    for name in names:
        _check_member_name(name)
    return ArchiveIndex(data, tables)


def _check_member_name(name: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name or "\x00" in name:
        raise ArchiveError(f"Unsafe member name {name!r} (absolute path or '..').")


class ArchiveReader:
    """A single forward pass over an archive, checking each member as it goes.

    ``reader.index`` is available after opening; ``reader.tables()`` then yields
    ``(entry, lines)`` for every table in order, where ``lines`` yields raw JSON lines and, when
    exhausted, has checked the member's size and sha256.
    """

    def __init__(self, path: Path, max_member_size: int | None = None):
        from django.conf import settings

        self.path = Path(path)
        self.max_member_size = max_member_size or settings.SYNC_MAX_MEMBER_SIZE
        self._raw: IO[bytes] | None = None
        self._stream: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None
        self.index: ArchiveIndex | None = None
        self.compression = "none"

    def __enter__(self) -> ArchiveReader:
        try:
            self._raw = open(self.path, "rb")
        except OSError as exc:
            raise ArchiveError(f"Cannot open {self.path}: {exc.strerror}.") from exc
        self.compression = detect_compression(self._raw.read(6))
        self._raw.seek(0)
        self._stream = _decompressed_reader(self._raw, self.compression)
        try:
            # In stream mode, opening already reads the first header.
            self._tar = tarfile.open(fileobj=self._stream, mode="r|")
        except READ_ERRORS as exc:
            self.__exit__(None, None, None)
            raise ArchiveError(f"{self.path.name} is corrupt or truncated ({exc}).") from exc
        try:
            first = self._next_member()
        except ArchiveError:
            self.__exit__(None, None, None)
            raise
        if first is None or first.name != INDEX_NAME:
            self.__exit__(None, None, None)
            raise ArchiveError(f"{self.path.name}: the first member is not {INDEX_NAME}.")
        try:
            self.index = parse_index(self._read_small(first, INDEX_MAX_SIZE))
        except ArchiveError:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._tar is not None:
            self._tar.close()
        if self._raw is not None:
            self._raw.close()

    def _next_member(self) -> tarfile.TarInfo | None:
        try:
            member = self._tar.next()
        except READ_ERRORS as exc:
            raise ArchiveError(f"{self.path.name} is corrupt or truncated ({exc}).") from exc
        if member is None:
            return None
        _check_member_name(member.name)
        if not member.isreg():
            raise ArchiveError(f"Member {member.name!r} is not a regular file.")
        if member.size > self.max_member_size:
            raise ArchiveError(
                f"Member {member.name!r} is {member.size} bytes, over the limit of "
                f"{self.max_member_size} (SYNC_MAX_MEMBER_SIZE)."
            )
        return member

    def _read_small(self, member: tarfile.TarInfo, limit: int) -> bytes:
        if member.size > limit:
            raise ArchiveError(f"Member {member.name!r} is too large ({member.size} bytes).")
        try:
            return self._tar.extractfile(member).read()
        except READ_ERRORS as exc:
            raise ArchiveError(f"{self.path.name} is corrupt or truncated ({exc}).") from exc

    def tables(self) -> Iterator[tuple[TableEntry, Iterator[bytes]]]:
        """Yield each table with its line stream, in archive order; check for extra members."""
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
        its own."""
        try:
            while self._stream.read(COPY_BUFFER):
                pass
        except READ_ERRORS as exc:
            raise ArchiveError(f"{self.path.name} is corrupt or truncated ({exc}).") from exc

    def _lines(self, member: tarfile.TarInfo, entry: TableEntry) -> Iterator[bytes]:
        digest = hashlib.sha256()
        stream = self._tar.extractfile(member)
        try:
            for line in stream:
                digest.update(line)
                yield line
        except READ_ERRORS as exc:
            raise ArchiveError(f"{self.path.name} is corrupt or truncated ({exc}).") from exc
        if digest.hexdigest() != entry.sha256:
            raise ArchiveError(f"Member {member.name!r} fails its sha256 check: it was altered.")


def read_index(path: Path) -> ArchiveIndex:
    with ArchiveReader(path) as reader:
        return reader.index
