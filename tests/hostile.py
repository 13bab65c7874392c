"""Hostile archives, built from raw parts: the index as bytes or a dict, members as bytes or a
stream, any tar member type and header size. Tests build what they need here; no binary file
is checked in. (``tests/archive_tools.py`` edits records; this edits the container.)"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from sync.archive import INDEX_NAME


@dataclass
class Part:
    """One tar member as it is written: its data, and a header that may say otherwise."""

    name: str
    data: bytes | IO[bytes] = b""
    size: int | None = None  # the header's size (default: the data's length)
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    pax: dict[str, str] = field(default_factory=dict)

    def info(self) -> tarfile.TarInfo:
        info = tarfile.TarInfo(self.name)
        info.size = len(self.data) if self.size is None else self.size
        info.type, info.linkname, info.pax_headers = self.type, self.linkname, self.pax
        return info

    def stream(self) -> IO[bytes] | None:
        if self.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            return None
        return io.BytesIO(self.data) if isinstance(self.data, bytes) else self.data


class Zeros(io.RawIOBase):
    """``size`` zero bytes, made as they are read (a member larger than memory)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def write_tar(path: Path, parts: list[Part], compression: str = "gz", level: int = 6) -> Path:
    mode = "w:" if compression == "none" else f"w:{compression}"
    options = {} if compression == "none" else {"compresslevel": level}
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT, **options) as tar:
        for part in parts:
            tar.addfile(part.info(), part.stream())
    return path


def index_part(index: dict | bytes) -> Part:
    return Part(INDEX_NAME, index if isinstance(index, bytes) else orjson.dumps(index))


def members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:*") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def rebuilt(
    good: Path,
    target: Path,
    change: Callable[[str, bytes], bytes] | None = None,
    extra: tuple[Part, ...] = (),
    drop: tuple[str, ...] = (),
    index_change: Callable[[dict], bytes | None] | None = None,
) -> Path:
    """``good`` rewritten to ``target``: members changed by ``change(name, data)``, ``drop``ped
    or ``extra`` appended, and the index changed by ``index_change(index)`` (which edits it in
    place, or returns the bytes to write instead)."""
    members = members_of(good)
    index = orjson.loads(members.pop(INDEX_NAME))
    if index_change:
        replaced = index_change(index)
        index = replaced if isinstance(replaced, bytes) else index
    parts = [
        Part(name, change(name, data) if change else data)
        for name, data in members.items()
        if name not in drop
    ]
    return write_tar(target, [index_part(index), *parts, *extra])


def resign(index: dict, member: str, data: bytes) -> None:
    """Make the index agree with a changed member, so that only the content check can fail."""
    entry = next(t for t in index["tables"] if t["member"] == member)
    entry["size"] = len(data)
    entry["sha256"] = hashlib.sha256(data).hexdigest()


def with_member(good: Path, target: Path, member: str, data: bytes) -> Path:
    """``good`` with ``member`` holding ``data`` and the index agreeing with it."""
    return rebuilt(
        good,
        target,
        change=lambda name, old: data if name == member else old,
        index_change=lambda index: resign(index, member, data),
    )


def with_bomb(
    good: Path, target: Path, member: str, size: int, declared: int | None = None, level: int = 9
) -> Path:
    """``good`` with ``member`` replaced by ``size`` zero bytes (no newline: one endless line),
    its index entry declaring ``declared`` bytes (default: that size); it compresses to about
    a thousandth of it."""
    members = members_of(good)
    index = orjson.loads(members.pop(INDEX_NAME))
    entry = next(t for t in index["tables"] if t["member"] == member)
    entry["size"] = size if declared is None else declared
    parts = [
        Part(name, Zeros(size), size=size) if name == member else Part(name, data)
        for name, data in members.items()
    ]
    return write_tar(target, [index_part(index), *parts], level=level)
