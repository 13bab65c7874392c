"""Where archives live: the Django storage alias ``sync`` (``STORAGES["sync"]``).

A project points it at any Django storage backend (django-storages' S3, say) without code; when
it names none, archives live in a ``FileSystemStorage`` at ``BACKUP_DIR``. Everything that
lists, reads, writes or deletes archives goes through ``archive_storage()``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages

ALIAS = "sync"


def archive_storage() -> Storage:
    """The storage that holds the archives."""
    if ALIAS in getattr(settings, "STORAGES", {}):
        return storages[ALIAS]
    from sync.conf import sync_settings

    return FileSystemStorage(location=sync_settings.BACKUP_DIR)
