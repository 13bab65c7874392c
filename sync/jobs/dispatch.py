"""Running a job that ``start_export`` / ``start_import`` created: the one call the doors
(commands with ``--async``, admin pages, scheduled tasks) use to have a job done.

Without a Celery broker the job is executed here and now, in this process; with one it is
handed to a worker (see ``sync.tasks``) once the current transaction commits.
"""

from __future__ import annotations

from sync.jobs.exports import execute_export
from sync.jobs.imports import execute_import
from sync.jobs.lifecycle import database_of
from sync.jobs.reporter import JobReporter
from sync.models import BackupRecord, Job


def dispatch(job: Job) -> None:
    """Have ``job`` (queued) executed: by a worker when a broker is configured, else inline.
    Inline, a failure is raised as the engine raises it (SyncError, JobCancelled)."""
    execute_job(job)


def execute_job(job: Job, reporter: JobReporter | None = None) -> None:
    """Execute ``job`` in this process: the engine's execute step for its kind."""
    execute = execute_export if isinstance(job, BackupRecord) else execute_import
    execute(job.pk, database_of(job), reporter)
