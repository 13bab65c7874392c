"""Where archives live: the Django storage alias ``sync`` (``STORAGES["sync"]``).

A project points it at any Django storage backend (django-storages' S3, say) without code; when
it names none, archives live in a ``FileSystemStorage`` at ``BACKUP_DIR``. Everything that
lists, reads, writes or deletes archives goes through ``archive_storage()`` (docs/storage.md).

- Writing (``ArchiveDestination``): an export builds its archive in a local folder — the
  storage's own folder when it has one, a temporary folder otherwise — and only a complete
  archive gets a name in the storage: moved into place on a local file system (never replacing
  a file), uploaded with ``Storage.save`` elsewhere (multipart on S3, in parts read from disk).
- Reading (``ArchiveLocation``): what a user or a record names — a local file, or a name in the
  storage — opened as a stream read in chunks, or spooled to a local temporary file for the
  readers that need a path (the import's verifying subprocess).
- Records keep a name in the storage, relative (web, worker and beat may be different hosts
  sharing one bucket); an absolute path is a local file (an export to ``--output DIR``, or a
  record written before archives lived in the storage).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

from sync.archive import COPY_BUFFER, ArchiveError, looks_like_backup, numbered, open_regular_file
from sync.errors import SyncError

ALIAS = "sync"
# Local working folders of exports that upload to a remote storage; like the archive writer's
# own spool folders they are leftovers once nothing touches them (sync.archive.remove_leftovers).
UPLOAD_PREFIX = ".sync-spool-upload-"


class StorageError(SyncError):
    """The archive storage cannot be reached or listed."""


def archive_storage() -> Storage:
    """The storage that holds the archives."""
    if ALIAS in getattr(settings, "STORAGES", {}):
        return storages[ALIAS]
    from sync.conf import sync_settings

    return FileSystemStorage(location=sync_settings.BACKUP_DIR)


def local_root(storage: Storage) -> Path | None:
    """The local folder ``storage`` keeps its files in, or None for a remote storage."""
    try:
        return Path(storage.path(""))
    except NotImplementedError:
        return None


def name_in_storage(record, storage: Storage) -> str | None:
    """The name of ``record``'s (a BackupRecord's) archive in ``storage``; None if it has none
    there. The one place that maps a record to its archive's name.

    Records written before archives moved to the storage API hold an absolute local path: that
    is a name only inside a local storage's folder (an archive written with ``--output`` to
    another folder is not in the storage)."""
    path = record.storage_path or record.file_name
    if not path:
        return None
    if not Path(path).is_absolute():
        return path
    root = local_root(storage)
    if root is None or not Path(path).is_relative_to(root.resolve()):
        return None
    return Path(path).relative_to(root.resolve()).as_posix()


def stored_archives(storage: Storage | None = None) -> list[str]:
    """Names of the archives at the top of the storage (plans and other files left out).

    A listing that fails raises: callers that delete must never take a failed listing for an
    empty storage."""
    storage = storage or archive_storage()
    root = local_root(storage)
    if root is not None and not root.exists():
        return []
    try:
        _, files = storage.listdir("")
    except Exception as exc:  # whatever the backend raises (OSError, botocore's ClientError…)
        raise StorageError(f"Cannot list the archive storage: {exc}") from exc
    return sorted(name for name in files if looks_like_backup(name))


# -- writing -----------------------------------------------------------------------------------


class ArchiveDestination:
    """Where an export puts its archive: the archive storage, or a local folder (``--output``)."""

    def __init__(self, storage: Storage, outside: bool = False):
        self.storage = storage
        self.root = local_root(storage)
        # A folder the user named for this export only: its records keep absolute paths.
        self.outside = outside

    @classmethod
    def for_export(cls, output_dir: Path | str | None) -> ArchiveDestination:
        if output_dir:
            return cls(FileSystemStorage(location=Path(output_dir).resolve()), outside=True)
        return cls(archive_storage())

    @property
    def is_local(self) -> bool:
        return self.root is not None

    @property
    def leftovers_dir(self) -> Path:
        """Where dead writers of this destination left their files (``work_dir``'s parent)."""
        return self.root if self.root is not None else Path(tempfile.gettempdir())

    def first_name(self, wanted: str) -> str:
        """``wanted``, or its first free numbered form (``…-2.backup.tar.gz``). Only a first
        choice: another export may take it before this one is done (``publish`` claims it)."""
        number = 1
        try:
            while self.storage.exists(str(numbered(PurePosixPath(wanted), number))):
                number += 1
        except Exception as exc:  # whatever the backend raises
            raise StorageError(f"Cannot reach the archive storage: {exc}") from exc
        return str(numbered(PurePosixPath(wanted), number))

    @contextmanager
    def work_dir(self) -> Iterator[Path]:
        """The local folder to build an archive in: the storage's own (the archive is then
        moved into place, never copied), or a temporary folder removed afterwards."""
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            yield self.root
            return
        folder = Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-"))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, archive: Path) -> str:
        """Give the complete local ``archive`` its name in the storage; return the name.

        Local: ``archive`` already has its final name in the storage's folder (the archive
        writer claimed it). Remote: uploaded with ``Storage.save`` under the first free name;
        an upload that fails or is interrupted leaves nothing under that name (S3 shows an
        object only once its multipart upload completes)."""
        if self.root is not None:
            return archive.relative_to(self.root).as_posix()
        name = self.first_name(archive.name)
        try:
            with open(archive, "rb") as data:
                name = self.storage.save(name, File(data, name=archive.name))
        except Exception as exc:  # whatever the backend raises (botocore's ClientError…)
            raise StorageError(f"Cannot upload {name} to the archive storage: {exc}") from exc
        archive.unlink(missing_ok=True)
        return name

    def recorded(self, name: str) -> str:
        """What a record keeps of an archive: its name in the storage, or the absolute path of
        a file in a folder given for one export."""
        return str(self.root / name) if self.outside else name

    def local_path(self, name: str) -> Path | None:
        return self.root / name if self.root is not None else None


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveLocation:
    """An archive to read: a local file, or a name in the archive storage."""

    text: str  # as the user or the record gave it
    path: Path | None = None
    storage: Storage | None = None

    @property
    def name(self) -> str:
        """The file name alone, for messages."""
        return PurePosixPath(self.text).name if self.path is None else self.path.name

    @property
    def in_storage(self) -> bool:
        return self.path is None

    def open(self) -> IO[bytes]:
        """The archive as a stream to read forward in chunks (never read whole into memory)."""
        if self.path is not None:
            return open_regular_file(self.path)
        try:
            return open_storage_stream(self.storage, self.text)
        except FileNotFoundError as exc:
            raise ArchiveError(f"Cannot open {self.text}: not in the archive storage.") from exc

    @contextmanager
    def local_file(self) -> Iterator[Path]:
        """A local path of the archive: its own, or a temporary copy spooled in chunks (and
        removed after the block) for an archive in a remote storage."""
        if self.path is not None:
            yield self.path
            return
        # Not a name remove_leftovers takes: nothing touches the copy while an import reads it.
        with tempfile.TemporaryDirectory(prefix="sync-read-") as folder:
            copy = Path(folder) / self.name
            with self.open() as source, open(copy, "wb") as target:
                shutil.copyfileobj(source, target, COPY_BUFFER)
            yield copy


def archive_name_problem(text: str) -> str | None:
    """Why ``text`` can name no archive, or None: a NUL character, which no file name holds
    (the os calls raise ValueError) and no PostgreSQL text either (a job records the name)."""
    if "\x00" in text:
        return f"{text!r} is not a file name: it holds a NUL character."
    return None


def locate_archive(text: Path | str, storage: Storage | None = None) -> ArchiveLocation:
    """Where the archive a user named is: an existing local path wins; else a name in the
    archive storage (a local storage's file is read at its path); else the local path (whose
    opening then says it does not exist)."""
    text = str(text)
    if problem := archive_name_problem(text):
        raise ArchiveError(problem)
    local = Path(text)
    if os.path.lexists(local) or local.is_absolute():
        return ArchiveLocation(text, path=local)
    storage = storage or archive_storage()
    try:
        found = storage.exists(text)
    except SuspiciousFileOperation:  # "../x": not a name in the storage
        found = False
    if not found:
        return ArchiveLocation(text, path=local)
    root = local_root(storage)
    if root is not None:
        return ArchiveLocation(text, path=Path(storage.path(text)))
    return ArchiveLocation(text, storage=storage)


def recorded_location(storage_path: str, storage: Storage | None = None) -> ArchiveLocation:
    """Where a record's archive is: an absolute path is a local file, anything else a name in
    the archive storage (whether it still exists or not)."""
    if Path(storage_path).is_absolute():
        return ArchiveLocation(storage_path, path=Path(storage_path))
    storage = storage or archive_storage()
    root = local_root(storage)
    if root is not None:
        return ArchiveLocation(storage_path, path=root / storage_path)
    return ArchiveLocation(storage_path, storage=storage)


def open_storage_stream(storage: Storage, name: str) -> IO[bytes]:
    """``name`` in ``storage`` as a buffered stream read in chunks.

    django-storages' S3 file downloads the whole object at its first read, into memory unless
    ``AWS_S3_MAX_MEMORY_SIZE`` is set (docs/storage.md). Its boto3 object is at hand, though:
    the body of a GET streams, so the archive is read as it arrives. Other backends are read
    through their own ``read(size)``."""
    opened = storage.open(name, "rb")
    s3_object = getattr(opened, "obj", None)
    if s3_object is not None and callable(getattr(s3_object, "get", None)):
        opened.close()
        body = s3_object.get()["Body"]
        return io.BufferedReader(_ChunkReader(body.read, body.close), COPY_BUFFER)
    return io.BufferedReader(_ChunkReader(opened.read, opened.close), COPY_BUFFER)


class _ChunkReader(io.RawIOBase):
    """A raw stream over a ``read(size)`` function, for ``io.BufferedReader``."""

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None]):
        self._read = read
        self._close = close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._close()
        super().close()
