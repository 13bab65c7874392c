"""The rule that decides each record (sync/decide.py), row by row of its table."""

from datetime import UTC, datetime

import pytest

from sync.decide import (
    NEWER,
    OLDER,
    SAME,
    UNSTAMPED,
    Decision,
    decide,
    needs_content,
    stamp_order,
)

T1, T2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("theirs", "ours", "order"),
    [
        (T2, T1, NEWER),
        (T1, T2, OLDER),
        (T1, T1, SAME),
        (None, T1, UNSTAMPED),
        (None, None, UNSTAMPED),
        (T1, None, NEWER),
        ("2026-01-02T00:00:00.000Z", "2026-01-01T00:00:00.000Z", NEWER),  # UTC texts
    ],
)
def test_stamp_order(theirs, ours, order):
    assert stamp_order(theirs, ours) == order


@pytest.mark.parametrize(
    ("mode", "exists", "order", "differs", "expected"),
    [
        ("replace", False, None, True, Decision("insert")),
        ("update", False, OLDER, True, Decision("insert")),
        ("append", True, None, True, Decision("skip", "exists (append mode)")),
        ("append", True, None, False, Decision("skip", "exists (append mode)")),
        ("update", True, OLDER, True, Decision("skip", "not newer")),
        ("update", True, OLDER, False, Decision("skip", "not newer")),
        ("replace", True, None, False, Decision("unchanged")),
        ("replace", True, None, True, Decision("update")),
        ("update", True, NEWER, False, Decision("unchanged")),
        ("update", True, NEWER, True, Decision("update")),
        ("update", True, SAME, False, Decision("unchanged")),
        ("update", True, SAME, True, Decision("skip", "same-timestamp-different-content")),
        ("update", True, UNSTAMPED, False, Decision("unchanged")),
        ("update", True, UNSTAMPED, True, Decision("skip", "no updated_at in the archive")),
    ],
)
def test_the_rule_table(mode, exists, order, differs, expected):
    assert decide(mode, exists, order, differs) == expected


def test_older_and_same_stamp_records_are_decided_unread():
    assert [needs_content(o) for o in (NEWER, SAME, OLDER, UNSTAMPED, None)] == [
        True,
        False,
        False,
        True,
        True,
    ]
    assert decide("update", True, SAME, False) == Decision("unchanged")
    # SYNC_SAME_STAMP_CHECK: a same-stamp record is read, and other content reported
    assert [needs_content(o, True) for o in (NEWER, SAME, OLDER, UNSTAMPED, None)] == [
        True,
        True,
        False,
        True,
        True,
    ]
