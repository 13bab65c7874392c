"""The rotation policy (sync.rotation.decide): which backups each rule keeps, on backups spread
over 400 days. The expected sets are worked out by hand from the rules in docs/rotation.md."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.errors import SyncError
from sync.models import Job
from sync.rotation import Backup, Decision, Policy, decide

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday, ISO week 2026-W48


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def mondays(first: date, last: date) -> list[date]:
    return [first + timedelta(weeks=n) for n in range((last - first).days // 7 + 1)]


def four_hundred_days() -> list[datetime]:
    """The backups' times, 2025-10-21 to 2026-11-25 (400 days before NOW to NOW):
    - one on Tuesday 2025-10-21 03:00 (the oldest);
    - every Monday 03:00 from 2025-10-27 to 2026-11-02, except in March 2026 (a month
      without backups);
    - every day 03:00 from 2026-11-06 to 2026-11-25;
    - a second one at 21:00 on 2026-11-20 and 2026-11-24."""
    times = [at("2025-10-21 03:00")]
    for monday in mondays(date(2025, 10, 27), date(2026, 11, 2)):
        if monday.month != 3:
            times.append(at(f"{monday} 03:00"))
    for day in range(6, 26):
        times.append(at(f"2026-11-{day:02d} 03:00"))
    times += [at("2026-11-20 21:00"), at("2026-11-24 21:00")]
    return times


TIMES = four_hundred_days()
BACKUPS = [Backup(id=n, time=time) for n, time in enumerate(TIMES, start=1)]


def kept_times(policy: Policy, backups: list[Backup] = BACKUPS) -> set[datetime]:
    return {d.backup.time for d in decide(backups, policy, NOW) if d.keep}


def days(*texts: str, hour: str = "03:00") -> set[datetime]:
    return {at(f"{text} {hour}") for text in texts}


def test_the_set_spans_400_days():
    assert (NOW.date() - min(TIMES).date()).days == 400
    assert len(TIMES) == 1 + (54 - 5) + 20 + 2


def test_keep_last_keeps_the_n_newest():
    assert kept_times(Policy(keep_last=5)) == {
        at("2026-11-25 03:00"),
        at("2026-11-24 21:00"),
        at("2026-11-24 03:00"),
        at("2026-11-23 03:00"),
        at("2026-11-22 03:00"),
    }


def test_keep_daily_keeps_the_newest_of_each_of_the_last_days_with_backups():
    assert kept_times(Policy(keep_daily=7)) == days(
        "2026-11-25", "2026-11-23", "2026-11-22", "2026-11-21", "2026-11-19"
    ) | days("2026-11-24", "2026-11-20", hour="21:00")


def test_keep_weekly_keeps_the_newest_of_each_iso_week():
    # Weeks run Monday to Sunday: W48 (23-29 Nov) → Wed 25th, W47 → Sun 22nd,
    # W46 → Sun 15th, W45 (2-8 Nov) → Sun 8th.
    assert kept_times(Policy(keep_weekly=4)) == days(
        "2026-11-25", "2026-11-22", "2026-11-15", "2026-11-08"
    )


# The newest backup of each month before November 2026 that has backups (not March 2026),
# eleven of them: with November 2026's, what keep-monthly 12 keeps.
MONTHS_BEFORE_NOVEMBER = (
    "2026-10-26",
    "2026-09-28",
    "2026-08-31",
    "2026-07-27",
    "2026-06-29",
    "2026-05-25",
    "2026-04-27",
    "2026-02-23",
    "2026-01-26",
    "2025-12-29",  # ISO week 2026-W01, but a December backup
    "2025-11-24",
)


def test_keep_monthly_counts_only_months_that_have_backups():
    # March 2026 has none: twelve months reach back to November 2025.
    assert kept_times(Policy(keep_monthly=12)) == days("2026-11-25", *MONTHS_BEFORE_NOVEMBER)


def test_a_rule_with_periods_left_over_keeps_the_oldest_backup_too():
    # 13 months have backups; the 11 left over keep the oldest backup (as restic does), though
    # 2025-10-27 is October 2025's newest.
    kept = kept_times(Policy(keep_monthly=24))
    assert at("2025-10-21 03:00") in kept
    assert at("2025-10-27 03:00") in kept
    assert len(kept) == 14


def test_max_age_keeps_what_is_at_most_d_days_old():
    # Cut-off: 2026-10-26 12:00; that Monday's 03:00 backup is older.
    assert kept_times(Policy(max_age_days=30)) == (
        days("2026-11-02", *(f"2026-11-{day:02d}" for day in range(6, 26)))
        | days("2026-11-20", "2026-11-24", hour="21:00")
    )


def test_rules_are_ored():
    policy = Policy(keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=12, max_age_days=14)
    expected = (
        # max-age 14 (cut-off 2026-11-11 12:00), keep-last 3 and keep-daily 7 are all in here
        days(*(f"2026-11-{day:02d}" for day in range(12, 26)))
        | days("2026-11-20", "2026-11-24", hour="21:00")
        # keep-weekly 4 adds Sunday 8 November
        | days("2026-11-08")
        # keep-monthly 12 adds the months before November 2026 (not March)
        | days(*MONTHS_BEFORE_NOVEMBER)
    )
    assert kept_times(policy) == expected
    assert len(expected) == 28


def test_each_decision_names_the_rules_that_decided_it():
    policy = Policy(keep_last=1, keep_daily=2, keep_weekly=1, keep_monthly=2, max_age_days=30)
    decisions = {d.backup.time: d for d in decide(BACKUPS, policy, NOW)}
    assert decisions[at("2026-11-25 03:00")].rules == (
        "last",
        "daily 2026-11-25",
        "weekly 2026-W48",
        "monthly 2026-11",
        "within 30 days",
    )
    assert decisions[at("2026-10-26 03:00")].rules == ("monthly 2026-10",)
    assert decisions[at("2026-10-19 03:00")] == Decision(
        decisions[at("2026-10-19 03:00")].backup,
        "delete",
        ("older than 30 days, no rule keeps it",),
    )


def test_days_weeks_and_months_are_those_of_the_time_zone():
    # 23:30 UTC on the 24th is 00:30 on the 25th in Berlin (UTC+1 in November).
    backups = [
        Backup(1, at("2026-11-23 12:00")),
        Backup(2, at("2026-11-24 20:00")),
        Backup(3, at("2026-11-24 23:30")),
    ]
    policy = Policy(keep_daily=2)
    in_utc = decide(backups, policy, NOW, UTC)
    in_berlin = decide(backups, policy, NOW, ZoneInfo("Europe/Berlin"))
    assert {d.backup.id for d in in_utc if d.keep} == {3, 1}
    assert {d.backup.id for d in in_berlin if d.keep} == {3, 2}
    assert next(d for d in in_berlin if d.backup.id == 3).rules == ("daily 2026-11-25",)


# -- safety ------------------------------------------------------------------------------------


def test_the_newest_successful_backup_stays_whatever_the_rules():
    old = [Backup(1, at("2026-10-01 03:00")), Backup(2, at("2026-10-02 03:00"))]
    running = Backup(3, at("2026-11-25 11:00"), status=Job.Status.RUNNING)
    failed = Backup(4, at("2026-11-25 10:00"), status=Job.Status.FAILED)
    decisions = {
        d.backup.id: d for d in decide([*old, running, failed], Policy(max_age_days=7), NOW)
    }
    assert decisions[2].keep and decisions[2].rules == ("newest successful",)
    assert not decisions[1].keep
    assert decisions[3].keep and decisions[3].rules == ("running",)
    assert not decisions[4].keep and decisions[4].rules == ("failed: leftover archive",)


def test_a_backup_a_kept_backup_depends_on_stays_and_so_do_its_own_parents():
    backups = [
        Backup(1, at("2026-01-01 03:00")),
        Backup(2, at("2026-02-01 03:00"), depends_on=(1,)),
        Backup(3, at("2026-03-01 03:00")),
        Backup(4, at("2026-11-25 03:00"), depends_on=(2,)),
    ]
    decisions = {d.backup.id: d for d in decide(backups, Policy(keep_last=1), NOW)}
    assert decisions[4].rules == ("last",)
    assert decisions[2].keep and decisions[2].rules == ("needed by #4",)
    assert decisions[1].keep and decisions[1].rules == ("needed by #2",)
    assert not decisions[3].keep


def test_a_running_export_keeps_what_it_depends_on():
    backups = [
        Backup(1, at("2026-01-01 03:00")),
        Backup(2, at("2026-11-24 03:00")),
        Backup(3, at("2026-11-25 11:00"), status=Job.Status.RUNNING, depends_on=(1,)),
    ]
    decisions = {d.backup.id: d for d in decide(backups, Policy(keep_last=1), NOW)}
    assert decisions[1].keep and decisions[1].rules == ("needed by #3",)


def test_with_no_rule_everything_is_kept():
    assert all(d.keep for d in decide(BACKUPS, Policy(), NOW))


def test_an_archive_missing_from_storage_is_neither_ranked_nor_deleted():
    backups = [Backup(1, at("2026-11-24 03:00")), Backup(2, at("2026-11-25 03:00"), present=False)]
    decisions = {d.backup.id: d for d in decide(backups, Policy(keep_last=1), NOW)}
    assert decisions[1].rules == ("last",)
    assert decisions[2].keep and decisions[2].rules == ("archive not in storage",)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keep_last": -1}, "--keep-last must be a whole number of 0 or more, not -1."),
        ({"max_age_days": 0}, "--max-age-days must be a whole number of days of 1 or more"),
    ],
)
def test_a_bad_rule_is_refused(options, message):
    with pytest.raises(SyncError, match=message):
        Policy(**options)


# -- properties --------------------------------------------------------------------------------

statuses = st.sampled_from(
    [Job.Status.SUCCEEDED] * 4 + [Job.Status.FAILED, Job.Status.RUNNING, Job.Status.QUEUED]
)


@st.composite
def backup_sets(draw) -> list[Backup]:
    count = draw(st.integers(0, 40))
    backups = []
    for n in range(1, count + 1):
        minutes = draw(st.integers(0, 400 * 24 * 60))
        parents = draw(st.lists(st.integers(1, count), max_size=2)) if n > 1 else []
        backups.append(
            Backup(
                id=n,
                time=NOW - timedelta(minutes=minutes),
                status=draw(statuses),
                depends_on=tuple(p for p in parents if p != n),
            )
        )
    return backups


policies = st.builds(
    Policy,
    keep_last=st.integers(0, 10),
    keep_daily=st.integers(0, 10),
    keep_weekly=st.integers(0, 6),
    keep_monthly=st.integers(0, 14),
    max_age_days=st.none() | st.integers(1, 400),
)


@given(backup_sets(), policies)
def test_what_any_policy_keeps(backups, policy):
    decisions = decide(backups, policy, NOW)
    kept = {d.backup.id for d in decisions if d.keep}
    successful = sorted(
        (b for b in backups if b.status == Job.Status.SUCCEEDED),
        key=lambda b: (b.time, b.id),
        reverse=True,
    )
    assert len(decisions) == len(backups)
    if successful:
        assert successful[0].id in kept  # the newest successful backup
    assert len(kept & {b.id for b in successful}) >= min(policy.keep_last, len(successful))
    for backup in backups:
        if backup.status in (Job.Status.RUNNING, Job.Status.QUEUED):
            assert backup.id in kept
        if backup.status == Job.Status.FAILED:
            assert backup.id not in kept
        if backup.id in kept:  # what stays keeps the successful backups it depends on
            assert set(backup.depends_on) & {b.id for b in successful} <= kept
        if (
            policy.max_age_days is not None
            and backup.status == Job.Status.SUCCEEDED
            and NOW - backup.time <= timedelta(days=policy.max_age_days)
        ):
            assert backup.id in kept


# -- settings ----------------------------------------------------------------------------------


def rotation_errors() -> list[str]:
    from sync.checks import check_rotation

    return [error.msg for error in check_rotation(None)]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BACKUP_KEEP_COUNT", 0, "BACKUP_KEEP_COUNT must be None or a positive number, not 0."),
        ("BACKUP_KEEP_COUNT", "7", "BACKUP_KEEP_COUNT must be None or a positive number, not '7'."),
        (
            "BACKUP_MAX_AGE_DAYS",
            -3,
            "BACKUP_MAX_AGE_DAYS must be None or a positive number of days, not -3.",
        ),
        (
            "SYNC_KEEP_WEEKLY",
            None,
            "SYNC_KEEP_WEEKLY must be a whole number of 0 or more, not None.",
        ),
    ],
)
def test_manage_py_check_tells_a_bad_rotation_setting(settings, name, value, message):
    assert rotation_errors() == []
    setattr(settings, name, value)
    assert rotation_errors() == [message]


def test_the_policy_of_the_settings_and_of_the_options(settings):
    settings.BACKUP_KEEP_COUNT = 4
    settings.SYNC_KEEP_MONTHLY = 6
    settings.BACKUP_MAX_AGE_DAYS = 30
    assert Policy.from_settings() == Policy(keep_last=4, keep_monthly=6, max_age_days=30)
    given = Policy.from_settings(keep_last=1, keep_daily=7, max_age_days=None)
    assert given == Policy(keep_last=1, keep_daily=7, keep_monthly=6, max_age_days=30)
    assert str(given) == "keep-last 1, keep-daily 7, keep-monthly 6, max-age 30 days"
