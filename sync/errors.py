"""The one base of the engine's errors.

``str(error)`` is the one line a command prints. The attributes say where it happened, so a
caller can attach the error to a record, a form field or a job without parsing the message:
``table`` (``app.Model``), ``key`` (the record's sync key, as the archive writes it),
``field`` (a field name), ``value`` (the refused value; None when it is a secret or there is
none), ``member`` and ``line`` (the archive member and line number). Each is None when the
error is not about one.
"""

from __future__ import annotations

from typing import Any


class SyncError(Exception):
    """An export, import or archive that cannot go on; the message names the problem."""

    def __init__(
        self,
        message: str = "",
        *,
        table: str | None = None,
        key: Any = None,
        field: str | None = None,
        value: Any = None,
        member: str | None = None,
        line: int | None = None,
    ):
        super().__init__(message)
        self.table, self.key, self.field, self.value = table, key, field, value
        self.member, self.line = member, line

    def where(self) -> dict[str, Any]:
        """The set place fields (not the value: it may be large), as a job stores them."""
        place = {
            "table": self.table,
            "key": self.key,
            "field": self.field,
            "member": self.member,
            "line": self.line,
        }
        return {name: value for name, value in place.items() if value is not None}

    def as_dict(self) -> dict[str, Any]:
        """The message, the place and the value if there is one, for a page to show."""
        value = {} if self.value is None else {"value": self.value}
        return {"message": str(self)} | self.where() | value


class ImportFailed(SyncError):
    """An import that cannot be done; the message names table, key and field."""
