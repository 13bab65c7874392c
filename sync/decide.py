"""The one rule that decides what an import does with an archive record: insert, update,
skip or leave it unchanged (and, later, conflict). The importer asks it twice in update mode —
before decoding a record (by its ``updated_at`` alone: an older record is not even decoded)
and after comparing its content — and gets the same answer for the same record.

The rule table (tests/test_decide.py checks it row by row):

target row, mode, archive's updated_at against the target's, content → action (reason):

    none                                           → insert
    exists, append                                 → skip (exists (append mode))
    exists, update, older                          → skip (not newer); content not read
    exists, newer or not compared, same            → unchanged
    exists, newer or not compared, different       → update
    exists, update, the same                       → unchanged; content not read, unless
                                                     SYNC_SAME_STAMP_CHECK (then:)
    exists, update, the same, same                 → unchanged
    exists, update, the same, different            → skip (same-timestamp-different-content)
    exists, update, none in the archive, same      → unchanged
    exists, update, none in the archive, different → skip (no updated_at in the archive)

"Not compared": replace mode, or a table without ``updated_at``. A target row without one
loses to any stamped archive record (newer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INSERT, UPDATE, SKIP, UNCHANGED, CONFLICT = "insert", "update", "skip", "unchanged", "conflict"
NEWER, SAME, OLDER, UNSTAMPED = "newer", "same", "older", "unstamped"
EXISTS = "exists (append mode)"
NOT_NEWER = "not newer"
SAME_STAMP = "same-timestamp-different-content"
NO_STAMP = "no updated_at in the archive"


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str = ""


def stamp_order(theirs: Any, ours: Any) -> str:
    """How the archive's ``updated_at`` stands to the target's: both datetimes, or both texts
    in the archive's UTC shape (whose text order is time order)."""
    if theirs is None:
        return UNSTAMPED
    if ours is None or theirs > ours:
        return NEWER
    return SAME if theirs == ours else OLDER


def needs_content(order: str | None, same_stamp_check: bool = False) -> bool:
    """Whether deciding needs the record's content compared: not for an older record, and
    for one with the same ``updated_at`` only with ``same_stamp_check``
    (``SYNC_SAME_STAMP_CHECK``); without it, such a record is taken as unchanged, unread.

    Comparing the content of same-stamp records (most records of an update, an incremental
    sync's included) makes an update that changes 1% about three times slower (bench
    ``import-update-1pct``, docs/performance.md), so the rule's
    ``same-timestamp-different-content`` row is an option until a cheaper content check
    exists (e.g. a digest per row kept from the last sync). docs/plans.md says so.
    """
    if order == SAME:
        return same_stamp_check
    return order != OLDER


def decide(mode: str, exists: bool, order: str | None, differs: bool) -> Decision:
    """The action for one record; ``order`` from ``stamp_order`` in update mode on a table
    with ``updated_at``, else None."""
    if not exists:
        return Decision(INSERT)
    if mode == "append":
        return Decision(SKIP, EXISTS)
    if order == OLDER:
        return Decision(SKIP, NOT_NEWER)
    if not differs:
        return Decision(UNCHANGED)
    if order is None or order == NEWER:
        return Decision(UPDATE)
    return Decision(SKIP, SAME_STAMP if order == SAME else NO_STAMP)
