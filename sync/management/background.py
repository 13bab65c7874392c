"""The ``--async`` option of syncexport and syncimport: hand the job to a Celery worker."""

from django.core.management.base import BaseCommand, CommandError

from sync.jobs.dispatch import NoBroker, enqueue, require_broker
from sync.models import Job


def require_worker() -> None:
    """Refuse ``--async`` in one line, before any job exists, when no broker is configured."""
    try:
        require_broker()
    except NoBroker as exc:
        raise CommandError(f"--async: {exc}") from exc


def hand_over(command: BaseCommand, job: Job, quiet: bool) -> None:
    """Queue ``job`` for a worker and print its name (alone on stdout, for scripts); unless
    ``quiet``, say how to follow it."""
    try:
        enqueue(job)
    except NoBroker as exc:
        raise CommandError(str(exc)) from exc
    command.stdout.write(job.label)
    if not quiet:
        command.stderr.write(
            f"{job.label} queued for a worker; follow it with: syncjobs --watch {job.label}"
        )
