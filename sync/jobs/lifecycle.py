"""The lifecycle every export and import job shares.

queued (``start_*``) → running (``claim``) → succeeded | failed | cancelled (``finish``).
A running job is *stale* when its heartbeat in the sync cache is older than
``SYNC_JOB_STALE_AFTER`` seconds: its process is gone (killed, out of memory, container
stopped). Not a process id: the web and worker containers share databases and a backup volume,
and a pid means nothing in another container. Stale jobs are marked failed when the next job
starts on the database (``mark_stale_jobs``). A queued job is never stale: it waits for a
worker, unless it was refused (another import held the lock) at a moment its row could not
be written: the refusal waits in the sync cache, the job shows failed and is recorded so by
the next ``mark_stale_jobs`` (``end_refused``).

``job_finished`` is sent once a job has ended, after that was committed: once per end a
watcher could see. A job marked stale (``end_dead``) whose process was alive after all
records its own end over the ``failed``; that is sent again only when its status differs
(succeeded, cancelled), never a second ``failed``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.utils import timezone

from sync.conf import sync_settings
from sync.errors import SyncError
from sync.jobs.channel import JobChannel, Progress
from sync.jobs.reporter import JobCancelled, JobReporter
from sync.models import FINISHED, BackupRecord, ImportRun, Job
from sync.signals import job_finished

KINDS: dict[str, type[Job]] = {"export": BackupRecord, "import": ImportRun}
NAME_HELP = (
    "A job is named by its kind and number, as syncjobs lists it: export-12, import-7 "
    "(export12 and export:12 are read the same). Exports and imports are numbered separately, "
    "so a number alone is not enough."
)
_NAME = re.compile(r"\s*(export|import)\s*[-:#]?\s*(\d+)\s*", re.IGNORECASE)


class JobError(SyncError):
    """A request about a job that cannot be done (unknown job, already ended…)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``docker stop``, systemd) while a job ran in this process, raised
    like Ctrl-C's KeyboardInterrupt so that the job ends the same way (see ``terminable``)."""


@contextmanager
def terminable() -> Iterator[None]:
    """Run the block with SIGTERM raised as ``Terminated``, as Ctrl-C raises KeyboardInterrupt:
    the job records its end (cancelled), its transaction rolls back and its partial files are
    removed, where by default the process would vanish and leave its job running until it
    turns stale. For commands, whose process is the job's; a Celery worker has its own
    shutdown. Only the main thread can take signals: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:  # None: a handler not set from Python, which cannot be put back from it
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def channel_of(job: Job) -> JobChannel:
    return JobChannel(job.token)


def database_of(job: Job) -> str:
    return job._state.db or "default"


# -- moving through the states -----------------------------------------------------------------


def claim(job: Job) -> None:
    """queued → running, in one conditional update: of two workers handed the same job, one
    runs it and the other is refused. A job refused while its row could not be written is
    recorded failed now, not run (see ``end_refused``)."""
    refused = channel_of(job).refusal()
    if refused is not None:
        end_refused(job, refused)
        job.refresh_from_db()
        raise JobError(f"{job.label} is {job.status}: only a queued job can be executed.")
    now = timezone.now()
    where = {"hostname": socket.gethostname(), "pid": os.getpid()}
    claimed = (
        type(job)
        ._default_manager.using(database_of(job))
        .filter(pk=job.pk, status=Job.Status.QUEUED)
        .update(status=Job.Status.RUNNING, started_at=now, **where)
    )
    if not claimed:
        job.refresh_from_db()
        raise JobError(f"{job.label} is {job.status}: only a queued job can be executed.")
    job.status, job.started_at = Job.Status.RUNNING, now
    job.hostname, job.pid = where["hostname"], where["pid"]


def finish(
    job: Job,
    status: str,
    error: str = "",
    detail: dict | None = None,
    progress: Progress | None = None,
    **fields: Any,
) -> None:
    """Record how the job ended, and send ``job_finished`` once the row is committed (inside
    a transaction: when it commits, with the work it records).

    The job's own process knows best how it ended: its end is written even over a
    ``failed`` that ``end_dead`` wrongly wrote meanwhile (a heartbeat that could not reach
    the cache); it is sent again only if its status differs from that one (see the module
    doc)."""
    model = type(job)._default_manager.using(database_of(job))
    ended_as = model.filter(pk=job.pk, status__in=FINISHED).values_list("status", flat=True)
    already = next(iter(ended_as), None)
    job.status = status
    job.error = error
    job.error_detail = detail or {}
    job.finished_at = timezone.now()
    if progress is not None:
        job.progress = progress.as_dict()
    for name, value in fields.items():
        setattr(job, name, value)
    job.save(using=database_of(job))
    if already != status:
        announce(job)


@contextmanager
def executing(job: Job, reporter: JobReporter, left: str) -> Iterator[None]:
    """Do the block as ``job``'s work: its progress published, its cancel flag heeded, and
    any end but success recorded; ``left`` says what a stopped job left ("nothing was
    changed"). A cancel is raised again as JobCancelled naming the job."""
    channel = channel_of(job)
    try:
        with reporter.attached(channel):
            yield
    except JobCancelled as exc:
        message = f"Cancelled on request; {left}."
        finish(job, Job.Status.CANCELLED, message, {"reason": "cancelled"}, reporter.snapshot())
        raise JobCancelled(f"{job.label} cancelled on request; {left}.") from exc
    except SoftTimeLimitExceeded:
        message = (
            f"Stopped: the {job.KIND} ran longer than its task's soft time limit "
            f"(SYNC_TASK_SOFT_TIME_LIMIT); {left}."
        )
        finish(job, Job.Status.FAILED, message, {"reason": "time limit"}, reporter.snapshot())
        raise
    except KeyboardInterrupt as exc:
        how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        message = f"Interrupted ({how}) before the {job.KIND} finished; {left}."
        finish(job, Job.Status.CANCELLED, message, {"reason": "cancelled"}, reporter.snapshot())
        raise
    except BaseException as exc:
        error = str(exc) or type(exc).__name__
        detail = storable(exc.where()) if isinstance(exc, SyncError) else None
        finish(job, Job.Status.FAILED, error, detail, reporter.snapshot())
        raise
    finally:
        channel.clear()  # the heartbeat has stopped: nothing publishes after this


def storable(value: Any) -> Any:
    """``value`` with each NUL character written as ``\\x00``: PostgreSQL's JSON cannot hold
    one, and a refused key may (the error names it)."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {name: storable(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def announce(job: Job) -> None:
    transaction.on_commit(
        lambda: job_finished.send(sender=type(job), job=job), using=database_of(job)
    )


# -- staleness ---------------------------------------------------------------------------------


def last_heartbeat(job: Job, progress: Progress | None = None) -> float:
    """When the job last said it is alive: its heartbeat in the cache, else when it started."""
    if progress is not None and progress.heartbeat is not None:
        return progress.heartbeat
    return (job.started_at or job.created_at).timestamp()


def is_stale(job: Job) -> bool:
    return job.status == Job.Status.RUNNING and silent_too_long(job, channel_of(job).read())


def silent_too_long(job: Job, progress: Progress | None) -> bool:
    """Whether the heartbeat in ``progress`` (read from the cache) is too old for a job that
    runs; ``None``: the cache has none."""
    return time.time() - last_heartbeat(job, progress) > sync_settings.SYNC_JOB_STALE_AFTER


def mark_stale_jobs(using: str) -> list[Job]:
    """Mark as failed the running jobs of ``using`` whose heartbeat stopped, and the queued
    ones refused while their row could not be written (``end_refused``); return them."""
    marked = []
    for model in KINDS.values():
        for job in model.objects.using(using).filter(status=Job.Status.QUEUED):
            message = channel_of(job).refusal()
            if message is not None and end_refused(job, message):
                marked.append(job)
        for job in model.objects.using(using).filter(status=Job.Status.RUNNING):
            progress = channel_of(job).read()
            if not silent_too_long(job, progress):
                continue
            seen = datetime.fromtimestamp(last_heartbeat(job, progress), tz=UTC)
            error = (
                f"Stale: no heartbeat since {seen:%Y-%m-%d %H:%M:%S} UTC; the process that ran "
                f"it (pid {job.pid} on {job.hostname or 'an unknown host'}) is gone."
            )
            if end_dead(job, error, "stale", progress):
                marked.append(job)
    return marked


def end_dead(job: Job, error: str, reason: str, progress: Progress | None = None) -> bool:
    """Record a running job whose process is gone as failed, unless it ended meanwhile (the
    update is conditional, so a job ending this very moment keeps its own end)."""
    last = (progress or Progress.from_dict(job.progress) or Progress()).as_dict()
    return end_failed(job, Job.Status.RUNNING, error, reason, progress=last | {"heartbeat": None})


def end_refused(job: Job, message: str) -> bool:
    """Record a queued job as refused (failed), unless it left the queue meanwhile."""
    return end_queued(job, message, "refused")


def end_queued(job: Job, error: str, reason: str) -> bool:
    """Record a queued job that cannot run as failed for ``reason`` (refused; no broker to
    hand it to), unless it left the queue meanwhile."""
    return end_failed(job, Job.Status.QUEUED, error, reason)


def end_failed(job: Job, was: str, error: str, reason: str, **fields: Any) -> bool:
    """Record ``job`` failed for ``reason`` if it is still in status ``was`` (a conditional
    update: whatever ended it meanwhile keeps its end), and announce it."""
    jobs = type(job)._default_manager.using(database_of(job))
    if not jobs.filter(pk=job.pk, status=was).update(
        status=Job.Status.FAILED,
        error=error,
        error_detail={"reason": reason},
        finished_at=timezone.now(),
        **fields,
    ):
        return False
    job.refresh_from_db()
    channel_of(job).clear()
    announce(job)
    return True


# -- cancelling --------------------------------------------------------------------------------


def request_cancel(job: Job) -> Job:
    """Ask ``job`` to stop, from any process. A queued job is cancelled at once; a running
    one stops at its next progress check (within a few seconds) and records itself
    cancelled: an import rolls back, an export leaves no archive."""
    if job.status in FINISHED:
        raise JobError(f"{job.label} has already ended ({job.status}); nothing to cancel.")
    channel_of(job).request_cancel()  # first: a worker claiming it meanwhile still sees it
    using = database_of(job)
    cancelled = (
        type(job)
        ._default_manager.using(using)
        .filter(pk=job.pk, status=Job.Status.QUEUED)
        .update(
            status=Job.Status.CANCELLED,
            error="Cancelled before it started.",
            error_detail={"reason": "cancelled"},
            finished_at=timezone.now(),
        )
    )
    job.refresh_from_db()
    if cancelled:
        channel_of(job).clear()
        announce(job)
    return job


# -- finding and showing jobs ------------------------------------------------------------------


def find_job(name: str, using: str = "default") -> Job:
    """The job named ``name`` (``export-12``, ``import-7``); JobError if there is none."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise JobError(f"{name!r} is not a job name. {NAME_HELP}")
    kind, number = match[1].lower(), int(match[2])
    try:
        return KINDS[kind].objects.using(using).get(pk=number)
    except KINDS[kind].DoesNotExist as exc:
        raise JobError(f"There is no {kind}-{number} in database {using!r}.") from exc


def load_job(model: type[Job], pk: int, using: str) -> Job:
    try:
        return model.objects.using(using).get(pk=pk)
    except model.DoesNotExist as exc:
        raise JobError(f"There is no {model.KIND}-{pk} in database {using!r}.") from exc


def recent_jobs(using: str = "default", limit: int = 20) -> list[Job]:
    """The latest ``limit`` jobs of both kinds, newest first."""
    jobs: list[Job] = []
    for model in KINDS.values():
        jobs += model.objects.using(using).select_related("user").order_by("-created_at")[:limit]
    jobs.sort(key=lambda job: (job.created_at, job.KIND, job.pk), reverse=True)
    return jobs[:limit]


@dataclass(frozen=True)
class JobState:
    """A job as a person watching it sees it: for a listing, a page, or JSON."""

    name: str
    kind: str
    status: str  # a Job.Status, or "stale"
    phase: str
    table: str
    done: int
    total: int | None
    who: str
    database: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str

    @classmethod
    def of(cls, job: Job) -> JobState:
        running = job.status == Job.Status.RUNNING
        live = channel_of(job).read() if running else None
        progress = live or Progress.from_dict(job.progress) or Progress()
        status, error = job.status, job.error
        if running and silent_too_long(job, live):
            status = "stale"
        elif status == Job.Status.QUEUED:  # refused, not recorded yet (see end_refused)
            refused = channel_of(job).refusal()
            if refused is not None:
                status, error = Job.Status.FAILED, refused
        return cls(
            name=job.label,
            kind=job.KIND,
            status=status,
            phase=progress.phase,
            table=progress.table,
            done=progress.done,
            total=progress.total,
            who=job.who,
            database=job.database,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=error,
        )

    @property
    def progress_text(self) -> str:
        if self.status == Job.Status.QUEUED:
            return "waiting for a worker"
        counted = f"{self.done:,}" + (f"/{self.total:,}" if self.total is not None else "")
        # A job that succeeded went through every phase; one that did not stopped in this one.
        phase = "done" if self.status == Job.Status.SUCCEEDED else self.phase
        table = "" if self.status == Job.Status.SUCCEEDED else self.table
        parts = [phase, table, f"{counted} records" if phase else ""]
        return " · ".join(part for part in parts if part)

    def as_dict(self) -> dict:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("created_at", "started_at", "finished_at"):
            data[name] = data[name].isoformat() if data[name] else None
        return data
