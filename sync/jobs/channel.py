"""A running job's progress, heartbeat and cancel flag, kept in the sync cache.

Why a cache and not the job's row: an import runs in one transaction, and on SQLite nothing
else can write the database until it commits (on PostgreSQL and MariaDB another connection
could, but every write would cost a round trip and a commit inside the hot loop). The cache
alias ``sync`` (``CACHES["sync"]``, ``SYNC_CACHE_URL``) is outside every database
transaction: a file-based cache under ``var/`` by default (shared by the processes of one
host, nothing to install), Redis when the processes that run and watch jobs live on several
hosts or containers (see docs/jobs.md). A project that defines no ``sync`` cache gets a
file-based one under ``BACKUP_DIR`` (``fallback_cache``). Entries are named by the job's
``token``, unique across databases and hosts.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.filebased import FileBasedCache

from sync.conf import sync_settings

CACHE_ALIAS = "sync"
# Where the fallback cache lives, in BACKUP_DIR: the one folder the processes that run and
# watch jobs (a command, the web and worker containers) already share.
FALLBACK_DIR = ".sync-cache"
# Entries of a job that died are never cleared by it: they expire. A running job rewrites
# its progress every second, so this only bounds how long a dead job's entries stay.
ENTRY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Progress:
    """Where a job stands: its phase, the table it works on, records done of total, and when
    its process last said it is alive (``time.time()``)."""

    phase: str = ""
    table: str = ""
    done: int = 0
    total: int | None = None
    heartbeat: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Progress | None:
        if not isinstance(data, dict):
            return None
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)

    def age(self) -> float | None:
        """Seconds since the last heartbeat, if there was one."""
        return None if self.heartbeat is None else time.time() - self.heartbeat


_fallbacks: dict[Path, BaseCache] = {}


def sync_cache() -> BaseCache:
    """The cache jobs talk through: ``CACHES["sync"]``, else ``fallback_cache()``."""
    if CACHE_ALIAS in settings.CACHES:
        return caches[CACHE_ALIAS]
    return fallback_cache()


def fallback_cache() -> BaseCache:
    """A file-based cache in ``BACKUP_DIR/.sync-cache``, for a project without a ``sync``
    cache alias: shared by the processes that share the backup folder (one per folder, so a
    changed BACKUP_DIR, as tests make, gets its own)."""
    location = sync_settings.BACKUP_DIR / FALLBACK_DIR
    cache = _fallbacks.get(location)
    if cache is None:
        params = {"KEY_PREFIX": "crearis-sync", "OPTIONS": {"MAX_ENTRIES": 100_000}}
        cache = _fallbacks[location] = FileBasedCache(str(location), params)
    return cache


class JobChannel:
    """One job's entries in the sync cache; any process may read them or ask it to stop."""

    def __init__(self, token: uuid.UUID | str):
        self.progress_key = f"job:{token}:progress"
        self.cancel_key = f"job:{token}:cancel"
        self.refusal_key = f"job:{token}:refused"

    @property
    def cache(self) -> BaseCache:
        return sync_cache()

    def publish(self, progress: Progress) -> None:
        self.cache.set(self.progress_key, progress.as_dict(), ENTRY_SECONDS)

    def read(self) -> Progress | None:
        return Progress.from_dict(self.cache.get(self.progress_key))

    def request_cancel(self) -> None:
        self.cache.set(self.cancel_key, True, ENTRY_SECONDS)

    def cancel_requested(self) -> bool:
        return bool(self.cache.get(self.cancel_key))

    def record_refusal(self, message: str) -> None:
        """The queued job was refused (another import holds the lock) while its row could not
        be written (SQLite, locked by that import): kept here until it can be
        (``sync.jobs.lifecycle.end_refused``)."""
        self.cache.set(self.refusal_key, message, ENTRY_SECONDS)

    def refusal(self) -> str | None:
        message = self.cache.get(self.refusal_key)
        return message if isinstance(message, str) else None

    def clear(self) -> None:
        """The job has ended: its row holds the final state."""
        self.cache.delete_many([self.progress_key, self.cancel_key, self.refusal_key])
