"""The sync app's own permissions, as the admin's pages and actions check them.

Each page and action names one (``RUN_EXPORT``…); a staff user without it gets 403. The lists
(backups, import runs, jobs) need the model's view permission.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

RUN_EXPORT = "sync.run_export"
RUN_IMPORT = "sync.run_import"
DOWNLOAD_BACKUP = "sync.download_backup"
UPLOAD_BACKUP = "sync.upload_backup"
VIEW_BACKUPS = "sync.view_backuprecord"
VIEW_IMPORTS = "sync.view_importrun"


def require_permission(request: HttpRequest, permission: str) -> None:
    """Refuse the request (403) unless its user holds ``permission``."""
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"This needs the permission {permission}.")


def permission_required(permission: str) -> Callable:
    """A view decorator: 403 unless the user holds ``permission`` (a signed-out user is sent
    to the login page first, by ``admin_site.admin_view``)."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def checked(request: HttpRequest, *args, **kwargs):
            require_permission(request, permission)
            return view(request, *args, **kwargs)

        return checked

    return decorate
