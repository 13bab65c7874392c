"""Celery tasks: the worker's door to the engine (docs/celery.md)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from sync.schedules import EXPORT_TASK, ROTATE_TASK, run_scheduled_export

logger = logging.getLogger(__name__)


# -- tasks beat runs (sync.schedules, docs/celery.md "Schedules") ------------------------------


@shared_task(name=EXPORT_TASK, bind=True)
def scheduled_export(self: Task, schedule: str = "", **options: Any) -> dict:
    """One run of an export schedule: ``options`` are start_export's, as the schedule's
    kwargs hold them; the export is executed here, or skipped while the schedule's previous
    run is still going. ``schedule`` defaults to the name beat sends in the message."""
    name = schedule or getattr(self.request, "periodic_task_name", None) or "unnamed"
    return run_scheduled_export(name, options).as_dict()


@shared_task(name=ROTATE_TASK)
def rotate() -> dict:
    """Remove the archives the retention rules no longer keep. Not available yet: the
    rotation issue fills this in (sync/rotation.py)."""
    reason = "rotation is not available yet; no archive was removed"
    logger.info("sync.rotate: %s.", reason)
    return {"status": "unavailable", "reason": reason}
