"""Beat schedules (sync/schedules.py, ``syncschedule``, the ``sync.scheduled_export`` task).

The defaults are installed once and then left to people: a second ``syncschedule`` changes
nothing (not even the change counter beat watches), an edited or disabled default is kept,
``--reset`` puts it back. A scheduled export skips while the schedule's previous run is still
going. And end to end: a real ``celery beat`` with the DatabaseScheduler sends a schedule that
is due, and a real worker (Redis database 6) completes the export.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from sync.jobs.exports import execute_export, start_export
from sync.jobs.lifecycle import claim
from sync.models import FINISHED, BackupRecord, Job
from sync.schedules import (
    DEFAULT_SCHEDULES,
    ScheduleError,
    run_scheduled_export,
    started_by,
)
from sync.tasks import scheduled_export
from tests.cli import cli
from tests.conftest import run_command
from tests.job_tools import reporter_calling
from tests.workers import redis_url, running_beat, running_worker, worker_site

NIGHTLY = "sync: nightly export"
NAMES = [default.name for default in DEFAULT_SCHEDULES]


def schedule_rows() -> dict[str, dict]:
    """Every periodic task as stored, all fields (last modified included)."""
    rows = PeriodicTask.objects.order_by("name")
    return {row.name: model_to_dict(row) | {"date_changed": row.date_changed} for row in rows}


def last_change():
    return PeriodicTasks.last_change()


# -- syncschedule ------------------------------------------------------------------------------


def test_syncschedule_installs_the_defaults_and_a_second_run_changes_nothing(db):
    first = cli("syncschedule")
    assert first.status == 0
    assert sorted(schedule_rows()) == sorted(NAMES)
    for name in NAMES:
        assert f"{name}: created" in first.out
    nightly = PeriodicTask.objects.get(name=NIGHTLY)
    assert nightly.task == "sync.scheduled_export" and nightly.enabled
    assert json.loads(nightly.kwargs) == {"schedule": NIGHTLY, "kind": "full", "compression": "gz"}
    assert str(nightly.crontab.timezone) == "UTC"  # the site's TIME_ZONE, which is Celery's
    rows, changed = schedule_rows(), last_change()

    again = cli("syncschedule", verbosity=2)

    assert again.status == 0
    assert schedule_rows() == rows
    assert last_change() == changed, "beat was told of a change that did not happen"
    assert f"0 schedule(s) written, {len(NAMES)} left as they are." in again.out


def change_form_data(response) -> dict:
    """What the admin's change form would post back as it shows it."""
    form = response.context["adminform"].form
    values = {name: form[name].value() for name in form.fields}
    return {name: value for name, value in values.items() if value is not None}


def test_an_edited_schedule_is_kept_and_reset_restores_it(admin_client):
    cli("syncschedule")
    nightly = PeriodicTask.objects.get(name=NIGHTLY)
    change = reverse("admin:django_celery_beat_periodictask_change", args=[nightly.pk])
    data = change_form_data(admin_client.get(change))
    assert admin_client.post(change, data).status_code == 302  # saved as it was
    assert f"{len(NAMES)} left as they are" in cli("syncschedule").out  # still the default
    data["kwargs"] = json.dumps({"schedule": NIGHTLY, "tables": ["content.Tag"], "level": 9})
    data["crontab"] = CrontabSchedule.objects.create(minute="15", hour="1", timezone="UTC").pk
    assert admin_client.post(change, data).status_code == 302
    edited = schedule_rows()

    outcome = cli("syncschedule")

    assert schedule_rows() == edited
    assert f"{NIGHTLY}: edited, kept as it is — changed: schedule, kwargs" in outcome.out
    listed = cli("syncschedule", list=True).out
    assert f"{NIGHTLY}  [edited: schedule, kwargs]" in listed
    assert '"tables": ["content.Tag"]' in listed

    dry = cli("syncschedule", reset=True, dry_run=True, interactive=False)
    assert "restored to the default (dry run)" in dry.out
    assert schedule_rows() == edited
    before = last_change()

    reset = cli("syncschedule", reset=True, interactive=False)

    assert f"{NIGHTLY}: restored to the default — changed: schedule, kwargs" in reset.out
    nightly.refresh_from_db()
    assert json.loads(nightly.kwargs) == {"schedule": NIGHTLY, "kind": "full", "compression": "gz"}
    assert (nightly.crontab.minute, nightly.crontab.hour) == ("30", "3")
    assert last_change() > before, "beat would not see the reset"
    assert cli("syncschedule", list=True).out.count("[default]") == len(NAMES)


def test_a_schedule_disabled_in_the_admin_stays_disabled(admin_client):
    cli("syncschedule")
    weekly = PeriodicTask.objects.get(name="sync: weekly full export")
    changelist = reverse("admin:django_celery_beat_periodictask_changelist")
    assert admin_client.get(changelist).status_code == 200  # in the project's admin
    response = admin_client.post(
        changelist, {"action": "disable_tasks", "_selected_action": [weekly.pk]}
    )
    assert response.status_code == 302
    disabled = schedule_rows()
    assert disabled["sync: weekly full export"]["enabled"] is False

    outcome = cli("syncschedule")

    assert schedule_rows() == disabled
    assert "sync: weekly full export: edited, kept as it is — changed: enabled" in outcome.out
    assert "[edited: enabled, disabled]" in cli("syncschedule", list=True).out


def test_a_deleted_default_comes_back_and_others_are_left(db):
    cli("syncschedule")
    PeriodicTask.objects.get(name="sync: daily rotation").delete()
    rows = schedule_rows()

    outcome = cli("syncschedule", verbosity=2)

    assert "sync: daily rotation: created" in outcome.out
    assert {name: rows[name] for name in rows} == {name: schedule_rows()[name] for name in rows}


def test_reset_of_an_unknown_schedule_is_refused_in_one_line(db):
    cli("syncschedule")
    rows = schedule_rows()
    outcome = cli("syncschedule", "sync: hourly export", reset=True, interactive=False)
    assert outcome.status == 1
    assert "No default schedule is named 'sync: hourly export'" in outcome.error
    assert "\n" not in outcome.error
    assert schedule_rows() == rows


# -- a scheduled run ---------------------------------------------------------------------------


def test_a_run_skips_while_the_previous_run_of_its_schedule_is_still_going(seeded, caplog):
    """The previous run is a real export, in progress: the next run of the same schedule is
    started from inside it (while its heartbeat is fresh) and must skip, saying why; another
    schedule is not held up."""
    seen = {}
    first = start_export(started_by=started_by(NIGHTLY))

    def run_next_once(count: int) -> None:
        if not seen:
            seen["same"] = run_scheduled_export(NIGHTLY, {"tables": ["content.Tag"]})
            seen["other"] = run_scheduled_export("sync: other", {"tables": ["content.Tag"]})

    execute_export(first.pk, reporter=reporter_calling(on_advance=run_next_once))

    assert seen["same"].job.pk == first.pk
    assert "still running" in seen["same"].skipped
    assert seen["same"].as_dict()["status"] == "skipped"
    assert f"Scheduled export {NIGHTLY!r} skipped: the previous run, {first.label}" in caplog.text
    assert seen["other"].skipped == "" and seen["other"].job.status == Job.Status.SUCCEEDED
    ran = BackupRecord.objects.filter(started_by=started_by(NIGHTLY))
    assert list(ran.values_list("pk", flat=True)) == [first.pk]  # nothing piled up

    after = run_scheduled_export(NIGHTLY, {"tables": ["content.Tag"]})  # the first has ended

    assert after.skipped == "" and after.job.status == Job.Status.SUCCEEDED
    assert after.job.started_by == "schedule sync: nightly export"


def test_a_previous_run_whose_worker_died_does_not_hold_the_schedule_up(seeded):
    dead = start_export(started_by=started_by(NIGHTLY))
    claim(dead)  # running, in a worker that then died: no heartbeat for an hour
    BackupRecord.objects.filter(pk=dead.pk).update(started_at=timezone.now() - timedelta(hours=1))

    run = run_scheduled_export(NIGHTLY, {"tables": "content.Tag", "compression": "none"})

    assert run.skipped == "" and run.job.status == Job.Status.SUCCEEDED
    assert run.job.tables == ["content.Tag"]  # a comma-separated string is a list of names
    assert Path(run.job.storage_path).name.endswith(".tar")
    dead.refresh_from_db()
    assert dead.status == Job.Status.FAILED and dead.error.startswith("Stale")


def test_an_unknown_option_in_a_schedules_kwargs_is_refused_before_any_job(db):
    with pytest.raises(ScheduleError, match="unknown export option 'compresion'"):
        run_scheduled_export(NIGHTLY, {"compresion": "zst"})
    with pytest.raises(ScheduleError):  # the task says the same
        scheduled_export.delay(schedule=NIGHTLY, compresion="zst")
    assert not BackupRecord.objects.exists()


# -- beat and a worker ---------------------------------------------------------------------


ALIAS = "default" if connection.vendor == "postgresql" else "sqlitefile"


@pytest.mark.once  # beat and the worker do the same on every engine
@pytest.mark.django_db(transaction=True, databases=["default", ALIAS])
def test_beat_sends_a_due_schedule_and_a_worker_completes_the_export(tmp_path):
    """A person made the nightly export due every minute (and it last ran two minutes ago,
    so it is due now): beat, on the database scheduler, sends it; the worker exports."""
    site = worker_site(ALIAS, tmp_path, redis_url(6))
    run_command("syncseed", database=ALIAS)
    site.run("syncschedule")  # as the web container does on start
    nightly = PeriodicTask.objects.using(ALIAS).get(name=NIGHTLY)
    nightly.crontab = CrontabSchedule.objects.using(ALIAS).create(
        minute="*", hour="*", timezone="UTC"
    )
    nightly.kwargs = json.dumps({"schedule": NIGHTLY, "compression": "zst"})
    nightly.last_run_at = timezone.now() - timedelta(minutes=2)
    nightly.save(using=ALIAS)
    jobs = BackupRecord.objects.using(ALIAS).filter(started_by=started_by(NIGHTLY))

    with running_worker(site) as worker, running_beat(site) as beat:
        deadline = time.monotonic() + 60
        while not jobs.filter(status__in=FINISHED).exists():
            assert time.monotonic() < deadline, f"no export ended:\n{beat.output}\n{worker.output}"
            time.sleep(0.2)
        beat.stop()  # nothing more is sent

    assert f"Sending due task {NIGHTLY} (sync.scheduled_export)" in beat.output
    export = jobs.order_by("pk").first()
    assert export.status == Job.Status.SUCCEEDED, export.error
    assert export.compression == "zst" and export.total_records > 0
    assert export.pid != os.getpid() and export.hostname  # done by the worker
    assert (site.backups / export.storage_path).is_file()  # a name in the archive storage
    site.run("syncverify", export.storage_path)
    assert "sync.scheduled_export" in worker.output and "succeeded" in worker.output


@pytest.mark.parametrize("answer", [EOFError, KeyboardInterrupt], ids=["eof", "ctrl-c"])
def test_no_answer_before_a_reset_changes_no_schedule(db, monkeypatch, answer):
    cli("syncschedule")
    PeriodicTask.objects.filter(name=NIGHTLY).update(kwargs=json.dumps({"schedule": NIGHTLY}))
    edited = schedule_rows()

    def no_answer(prompt: str) -> str:
        raise answer

    monkeypatch.setattr("builtins.input", no_answer)
    outcome = cli("syncschedule", reset=True)

    assert (outcome.status, outcome.error) == (1, "Reset cancelled; no schedule was changed.")
    assert schedule_rows() == edited
