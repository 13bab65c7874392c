"""System data (statuses, tags, config keys) that the platform needs in every database.

It lives in a data file in the repository, not in migrations: migrations hold schema only.
Seeding is an import of that file — append mode (only missing rows), or update mode with
``update=True`` (rows that differ are overwritten) — so seeding and syncing are one mechanism.
"""

from __future__ import annotations

from pathlib import Path

from sync.importer import ImportFailed, ImportResult, import_records
from sync.jobs.imports import refusal
from sync.locking import LockBusy, import_lock, write_transaction
from sync.sources import DataFileSource

SYSTEM_DATA_FILE = Path(__file__).resolve().parent.parent / "crearis/content/data/system.json"


def seed_system_data(
    update: bool = False, using: str = "default", path: Path = SYSTEM_DATA_FILE
) -> ImportResult:
    """Insert the system rows that are missing; with ``update``, overwrite changed ones too.

    Seeding is an import: it takes the same lock, so it never runs beside one."""
    try:
        with import_lock(using), write_transaction(using):
            mode = "update" if update else "append"
            return import_records(DataFileSource(path), mode=mode, using=using)
    except LockBusy as exc:
        raise ImportFailed(refusal(using)) from exc
