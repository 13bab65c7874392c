"""Running a job that ``start_export`` / ``start_import`` created: the one call the doors
(commands with ``--async``, admin pages, scheduled tasks) use to have a job done.

Without a Celery broker the job is executed here and now, in this process; with one it is
handed to a worker (``sync.tasks``) once the current transaction commits. A worker executes
the job only if it is still queued (``execute_queued``): a task delivered twice, or delivered
after its job was cancelled, does nothing the second time (see docs/celery.md).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from kombu.exceptions import OperationalError

from sync.errors import SyncError
from sync.jobs.exports import execute_export
from sync.jobs.imports import execute_import
from sync.jobs.lifecycle import (
    KINDS,
    JobError,
    channel_of,
    database_of,
    end_queued,
    is_stale,
    load_job,
    mark_stale_jobs,
)
from sync.jobs.reporter import JobReporter
from sync.models import FINISHED, BackupRecord, Job

logger = logging.getLogger(__name__)


class NoBroker(SyncError):
    """A job was to be handed to a worker, and no Celery broker is configured."""


def broker_configured() -> bool:
    """Whether jobs go to a worker: a broker is set and tasks are not run eagerly."""
    conf = current_app.conf
    return bool(conf.broker_url) and not conf.task_always_eager


def require_broker() -> None:
    """Refuse (NoBroker) unless a worker can be handed jobs: before a door creates one."""
    if not broker_configured():
        raise NoBroker(
            "no Celery broker is configured (CELERY_BROKER_URL is not set), so no worker can "
            "run the job: run it here (without --async), or set CELERY_BROKER_URL and start a "
            "worker (docs/celery.md)."
        )


def dispatch(job: Job) -> None:
    """Have ``job`` (queued) executed: by a worker when a broker is configured, else inline.
    Inline, a failure is raised as the engine raises it (SyncError, JobCancelled)."""
    if broker_configured():
        enqueue(job)
    else:
        execute_job(job)


def enqueue(job: Job) -> str:
    """Hand ``job`` (queued) to a worker once the current transaction of its database commits
    (at once outside one): a worker must find the job's row. Return the task's id, which is
    recorded on the job. A broker that cannot be reached fails the job (NoBroker)."""
    require_broker()
    from sync.tasks import TASKS  # sync.tasks imports this module

    task = TASKS[job.KIND]
    using = database_of(job)
    task_id = str(uuid.uuid4())
    type(job)._default_manager.using(using).filter(pk=job.pk).update(task_id=task_id)
    job.task_id = task_id

    def send() -> None:
        try:
            # The job's row is its result: nothing waits for one (nor subscribes to it).
            task.apply_async((job.pk, using), task_id=task_id, ignore_result=True)
        except OperationalError as exc:  # kombu's: the broker cannot be reached
            message = f"Could not hand {job.label} to a worker: no broker answered ({exc})."
            end_queued(job, message, "broker")
            raise NoBroker(message) from exc

    transaction.on_commit(send, using=using)
    return task_id


def execute_job(job: Job, reporter: JobReporter | None = None) -> None:
    """Execute ``job`` in this process: the engine's execute step for its kind."""
    execute = execute_export if isinstance(job, BackupRecord) else execute_import
    execute(job.pk, database_of(job), reporter)


@dataclass(frozen=True)
class Delivery:
    """What a worker did with a job it was handed: ``executed`` it (to ``status``), or left
    it alone (``reason`` says why)."""

    job: str
    executed: bool
    status: str
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def execute_queued(kind: str, job_id: int, using: str = "default") -> Delivery:
    """Execute job ``kind``-``job_id`` of ``using`` if it is still queued, as a worker does
    with each task it is handed; else leave it as it is and say why (logged).

    A job that ended, was cancelled, or runs elsewhere is not run again: a task message can
    be delivered twice (Redis hands an unacknowledged message out again after its visibility
    timeout). A job whose process died (stale) is not run again either: it is marked failed,
    and a person or the next schedule starts a new one. How the job ended is on its row; a
    failure the engine recorded is not raised again."""
    try:
        job = load_job(KINDS[kind], job_id, using)
    except JobError as exc:  # deleted before a worker took it
        logger.warning("Task for %s-%s: %s", kind, job_id, exc)
        return Delivery(f"{kind}-{job_id}", False, "", str(exc))
    if job.status != Job.Status.QUEUED:
        return passed_over(job)
    try:
        execute_job(job)
    except JobError:  # another delivery claimed it between our read and our claim
        job.refresh_from_db()
        return passed_over(job)
    except (SyncError, SoftTimeLimitExceeded):
        pass  # recorded on the job's row, with a message a person can read
    job.refresh_from_db()
    if job.status != Job.Status.SUCCEEDED:
        logger.warning("%s %s: %s", job.label, job.status, job.error)
    return Delivery(job.label, True, job.status, job.error)


def passed_over(job: Job) -> Delivery:
    if job.status in FINISHED:
        reason = f"{job.label} has already ended ({job.status}); not run again."
    elif job.status == Job.Status.RUNNING and is_stale(job):
        mark_stale_jobs(database_of(job))
        reason = f"{job.label} was running, and its process is gone: marked failed, not run again."
    else:
        progress = channel_of(job).read()
        age = (
            f"{time.time() - progress.heartbeat:.0f} s ago"
            if progress and progress.heartbeat
            else "not yet"
        )
        reason = (
            f"{job.label} is {job.status} elsewhere (pid {job.pid} on {job.hostname}, last "
            f"heartbeat {age}); not started again."
        )
    job.refresh_from_db()
    logger.warning("Task for %s delivered again: %s", job.label, reason)
    return Delivery(job.label, False, job.status, reason)
