"""A running job's progress, heartbeat and cancel flag, kept in the sync cache.

Why a cache and not the job's row: an import runs in one transaction, and on SQLite nothing
else can write the database until it commits (on PostgreSQL and MariaDB another connection
could, but every write would cost a round trip and a commit inside the hot loop). The cache
alias ``sync`` (``CACHES["sync"]``, ``SYNC_CACHE_URL``) is outside every database
transaction: a file-based cache under ``var/`` by default (shared by the processes of one
host, nothing to install), Redis when the processes that run and watch jobs live on several
hosts or containers (see docs/jobs.md). Entries are named by the job's ``token``, unique
across databases and hosts.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass

from django.core.cache import caches

CACHE_ALIAS = "sync"
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


class JobChannel:
    """One job's entries in the sync cache; any process may read them or ask it to stop."""

    def __init__(self, token: uuid.UUID | str):
        self.progress_key = f"job:{token}:progress"
        self.cancel_key = f"job:{token}:cancel"

    @property
    def cache(self):
        return caches[CACHE_ALIAS]

    def publish(self, progress: Progress) -> None:
        self.cache.set(self.progress_key, progress.as_dict(), ENTRY_SECONDS)

    def read(self) -> Progress | None:
        return Progress.from_dict(self.cache.get(self.progress_key))

    def request_cancel(self) -> None:
        self.cache.set(self.cancel_key, True, ENTRY_SECONDS)

    def cancel_requested(self) -> bool:
        return bool(self.cache.get(self.cancel_key))

    def clear(self) -> None:
        """The job has ended: its row holds the final state."""
        self.cache.delete_many([self.progress_key, self.cancel_key])
