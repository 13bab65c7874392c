"""Celery tasks: the worker's door to the engine (docs/celery.md).

Thin: each task takes ids and primitives (JSON), calls the engine, and returns what happened
as a small dict. Exports and imports are created as queued jobs first (``start_export``,
``start_import``) and handed over with ``sync.jobs.dispatch.dispatch``; the task executes the
job only if it is still queued, so a message delivered twice runs its job once.

Messages are acknowledged as a task starts (``acks_late=False``): a job whose worker is
killed is not run again by itself; its row shows it stale, then failed.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from sync import rotation, webhooks
from sync.conf import sync_settings
from sync.jobs.dispatch import execute_queued
from sync.schedules import EXPORT_TASK, ROTATE_TASK, WEBHOOK_RETRY_TASK, run_scheduled_export

logger = logging.getLogger(__name__)

JOB_TASK_OPTIONS = {
    "acks_late": False,
    "reject_on_worker_lost": False,
    "soft_time_limit": sync_settings.SYNC_TASK_SOFT_TIME_LIMIT,
    "time_limit": sync_settings.SYNC_TASK_TIME_LIMIT,
}


@shared_task(name="sync.export", **JOB_TASK_OPTIONS)
def export(job_id: int, using: str = "default") -> dict:
    """Execute the queued export ``job_id`` of database ``using``."""
    return execute_queued("export", job_id, using).as_dict()


@shared_task(name="sync.import", **JOB_TASK_OPTIONS)
def import_(job_id: int, using: str = "default") -> dict:
    """Execute the queued import ``job_id`` of database ``using``."""
    return execute_queued("import", job_id, using).as_dict()


# The task that executes a job of each kind (``sync.jobs.dispatch.enqueue``).
TASKS: dict[str, Task] = {"export": export, "import": import_}


# -- tasks beat runs (sync.schedules, docs/celery.md "Schedules") ------------------------------


@shared_task(name=EXPORT_TASK, bind=True, **JOB_TASK_OPTIONS)
def scheduled_export(self: Task, schedule: str = "", **options: Any) -> dict:
    """One run of an export schedule: ``options`` are start_export's, as the schedule's
    kwargs hold them; the export is executed here, or skipped while the schedule's previous
    run is still going. ``schedule`` defaults to the name beat sends in the message."""
    name = schedule or getattr(self.request, "periodic_task_name", None) or "unnamed"
    return run_scheduled_export(name, options).as_dict()


@shared_task(name=ROTATE_TASK)
def rotate(using: str = "default") -> dict:
    """Delete the archives the settings' retention rules no longer keep (beat runs it daily;
    docs/rotation.md). A refusal (the storage cannot be listed…) fails the task: nothing was
    deleted."""
    return rotation.rotate(using=using).as_dict()


# -- webhooks (docs/webhooks.md) ---------------------------------------------------------------

# A delivery attempt waits at most its two timeouts; the periodic run sends up to 100.
WEBHOOK_LIMITS = {"soft_time_limit": 9 * 60, "time_limit": 10 * 60}


@shared_task(name="sync.deliver_webhook", ignore_result=True, **WEBHOOK_LIMITS)
def deliver_webhook(delivery_id: int) -> None:
    """Make the next attempt of one webhook delivery, if it is still due (safe to run twice)."""
    webhooks.deliver(delivery_id)


@shared_task(name=WEBHOOK_RETRY_TASK, ignore_result=True, **WEBHOOK_LIMITS)
def deliver_due_webhooks() -> int:
    """Attempt the webhook deliveries whose next attempt is due (run every minute by beat)."""
    return len(webhooks.deliver_due())
