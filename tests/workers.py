"""A Celery worker as production runs one: ``celery -A crearis worker`` in a process of its
own, on a real Redis, executing the tasks of a site (``tests.sites.Site``) whose database
the test reads and writes too.

Each family of tests uses a Redis database of its own (``redis_url(5)``), and each site a
queue of its own (``CELERY_TASK_DEFAULT_QUEUE``, emptied when a worker starts): test runs
side by side (the SQLite and PostgreSQL passes, other engineers) never take each other's
tasks. Redis down: the tests fail (``running_worker`` raises at once), they are not skipped.

    site = worker_site("sqlitefile", folder, redis_url(5), SYNC_JOB_STALE_AFTER="3")
    with running_worker(site) as worker:
        site.run("syncexport", "--async")
        worker.kill()      # SIGKILL, the worker and its pool process
        worker.start()     # a new one, on the same queue

``celery_client(site)`` sends tasks by name to the site's queue, as beat or another worker
would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import kombu.pools
import redis
from celery import Celery
from django.db import connections

from tests.job_tools import cache_url
from tests.sites import ROOT, Site, database_url

REDIS = "redis://127.0.0.1:6379"
READY = " ready."  # what a worker logs once it consumes tasks


def redis_url(number: int) -> str:
    """Redis database ``number`` of the local server, as a broker URL."""
    return f"{REDIS}/{number}"


def empty_queue(broker: str, queue: str) -> None:
    """Drop the tasks waiting in ``queue``: none of an earlier run is left to deliver. Raises
    (the test fails) when Redis cannot be reached."""
    client = redis.Redis.from_url(broker, socket_connect_timeout=5)
    try:
        client.delete(queue)
    finally:
        client.close()


@contextmanager
def sending_to(broker: str, **conf) -> Iterator[None]:
    """This process's Celery app sends tasks to ``broker`` (instead of running them eagerly),
    with ``conf`` on top, over connections of its own: the app keeps the connections it made
    (eager runs make some too), and a message sent over one of those goes elsewhere. Its
    settings and connections are put back afterwards."""
    from crearis.celery import app

    names = ("task_always_eager", "broker_url", *conf)
    saved = {name: app.conf[name] for name in names}
    forget_connections(app)
    app.conf.update(task_always_eager=False, broker_url=broker, **conf)
    try:
        yield
    finally:
        app.conf.update(saved)
        forget_connections(app)


def forget_connections(app: Celery) -> None:
    """Have ``app`` make its connections, queues and routes from its settings again when it
    next sends: it keeps them once made (kombu in a registry of its own, keyed by broker URL,
    so a closed pool would be handed out again), the default queue among them."""
    kombu.pools.reset()
    app._pool = app.amqp._producer_pool = None
    for name in ("default_queue", "queues", "router"):
        app.amqp.__dict__.pop(name, None)


def worker_site(alias: str, folder: Path, broker: str, **settings: str) -> Site:
    """A site on the test database ``alias`` (a SQLite file, or a PostgreSQL/MariaDB test
    database) whose processes share this test run's sync cache and use ``broker``; more
    environment in ``settings`` (SYNC_JOB_STALE_AFTER="3"…). Its tasks go to a queue of its
    own. In the site's processes the database is ``default``: hand tasks ``"default"`` as
    their database alias."""
    connection = connections[alias]
    if connection.vendor == "sqlite":
        url = f"sqlite:///{connection.settings_dict['NAME']}"
    else:
        url = database_url(alias)
    environment = {
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_DEFAULT_QUEUE": f"sync-test-{uuid.uuid4().hex[:12]}",
        "SYNC_CACHE_URL": cache_url(),
        **settings,
    }
    return Site(url, folder / "backups", alias, environment)


@dataclass
class Worker:
    """One ``celery worker`` process (a prefork pool of one: time limits need it) for
    ``site``; its log lines are kept in ``log``."""

    site: Site
    args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    log: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60) -> Worker:
        """Start the worker and wait until it consumes tasks."""
        self.stop()
        self.log = []
        command = self.site.command("-m", "celery", "-A", "crearis", *self.celery_args())
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.site.env(), text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        self.wait_for_log(self.ready, timeout)
        return self

    ready: ClassVar[str] = READY

    def celery_args(self) -> tuple[str, ...]:
        return (
            "worker", "--pool=prefork", "--concurrency=1", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--hostname", f"sync-test-{uuid.uuid4().hex[:8]}@%h",
            "--queues", self.site.settings["CELERY_TASK_DEFAULT_QUEUE"], *self.args,
        )  # fmt: skip

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.log.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.log)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for_log(self, text: str, timeout: float = 60) -> str:
        """The first log line holding ``text``, once the worker wrote it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = next((line for line in self.log if text in line), None)
            if line is not None:
                return line
            if not self.alive():
                raise AssertionError(f"the worker ended before logging {text!r}:\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"the worker did not log {text!r} within {timeout} s:\n{self.output}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool process at once, as a crash or OOM kill does."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 10) -> None:
        """End the worker (warm shutdown; killed if that takes longer than ``timeout``)."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait()
            self.process.stdout.close()
        self.process = None


@contextmanager
def running_worker(
    site: Site, *args: str, timeout: float = 60, empty: bool = True
) -> Iterator[Worker]:
    """A worker for ``site`` (more ``celery worker`` ARGS in ``args``), stopped after the
    block; the site's queue is emptied first unless ``empty`` is false (a second worker
    beside a running one)."""
    if empty:
        empty_queue(site.settings["CELERY_BROKER_URL"], site.settings["CELERY_TASK_DEFAULT_QUEUE"])
    worker = Worker(site, args)
    try:
        yield worker.start(timeout)
    finally:
        worker.stop()


class Beat(Worker):
    """``celery beat`` for ``site`` on the database scheduler (django-celery-beat), as the
    compose file runs it: it sends the site's schedules (rows of its database) when due."""

    ready: ClassVar[str] = "beat: Starting..."

    def celery_args(self) -> tuple[str, ...]:
        scheduler = "django_celery_beat.schedulers:DatabaseScheduler"
        return ("beat", "--scheduler", scheduler, "--loglevel=INFO", *self.args)


@contextmanager
def running_beat(site: Site, *args: str, timeout: float = 60) -> Iterator[Beat]:
    """Beat for ``site`` (more ``celery beat`` ARGS in ``args``), stopped after the block.
    Start the site's worker first: it empties the site's queue."""
    beat = Beat(site, args)
    try:
        yield beat.start(timeout)
    finally:
        beat.stop()


def celery_client(site: Site) -> Celery:
    """A Celery app of this process that sends tasks by name to ``site``'s queue and reads
    their results (``client.send_task("sync.export", [job_id, "default"]).get(60)``)."""
    broker = site.settings["CELERY_BROKER_URL"]
    client = Celery("sync-tests", broker=broker, backend=broker, set_as_current=False)
    client.conf.task_default_queue = site.settings["CELERY_TASK_DEFAULT_QUEUE"]
    return client
