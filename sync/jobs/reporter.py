"""What the engine tells about its progress, and asks before going on: ``JobReporter``.

The engine calls ``phase``, ``table``, ``advance`` and ``check_cancelled`` (cheap: a counter
and a flag, no I/O). While a job runs, a small thread of the reporter publishes the progress
with a heartbeat to the sync cache about once a second, reads the job's cancel flag, and
touches the files the job is writing — so that another process, host or container can watch
the job, stop it, and tell its files from a dead writer's leftovers, even while the work is
stuck in one long step. A terminal's progress bar is a ``ProgressListener`` of the same
reporter.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from sync.errors import SyncError
from sync.jobs.channel import JobChannel, Progress

HEARTBEAT_SECONDS = 1.0

logger = logging.getLogger(__name__)


class JobCancelled(SyncError):
    """The job was asked to stop (``request_cancel``); raised at the engine's next check."""


class ProgressListener(Protocol):
    """Told of progress as it happens, in the job's own process (a terminal's bar)."""

    def total(self, total: int | None) -> None: ...

    def advance(self, count: int) -> None: ...

    def phase(self, phase: str) -> None: ...


class JobReporter:
    def __init__(self, listener: ProgressListener | None = None):
        self.listener = listener
        self.current_phase = ""
        self.current_table = ""
        self.done = 0
        self.total: int | None = None
        self.channel: JobChannel | None = None
        self._cancelled = threading.Event()
        self._stopped = threading.Event()
        self._beats: threading.Thread | None = None
        self._working_paths: list[Callable[[], Iterable[Path]]] = []
        self._beat_failed = False

    # -- what the engine says ---------------------------------------------------------------
    def phase(self, name: str, total: int | None = None) -> None:
        """A new phase of the work; with ``total``, the records it will go through."""
        self.current_phase = name
        if total is not None:
            self.set_total(total)
        if self.listener:
            self.listener.phase(name)
        self.check_cancelled()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A phase inside another one (waiting for verification while reading): the outer
        phase is back when the block ends (not when it raises: the job stopped there)."""
        outer = self.current_phase
        self.phase(name)
        yield
        self.current_phase = outer
        if self.listener:
            self.listener.phase(outer)

    def set_total(self, total: int | None) -> None:
        self.total = total
        self.done = 0
        if self.listener:
            self.listener.total(total)

    def table(self, label: str) -> None:
        self.current_table = label
        self.check_cancelled()

    def advance(self, count: int) -> None:
        self.done += count
        if self.listener:
            self.listener.advance(count)
        if self._cancelled.is_set():
            raise JobCancelled("Cancelled on request.")

    def check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise JobCancelled("Cancelled on request.")

    def keep_fresh(self, paths: Callable[[], Iterable[Path]]) -> None:
        """Touch the files ``paths()`` names with every heartbeat: their age then tells
        another process whether their writer is alive (``remove_leftovers``)."""
        self._working_paths.append(paths)

    def snapshot(self) -> Progress:
        return Progress(self.current_phase, self.current_table, self.done, self.total)

    # -- while a job runs -------------------------------------------------------------------
    @contextmanager
    def attached(self, channel: JobChannel) -> Iterator[JobReporter]:
        """Publish to ``channel`` and heed its cancel flag until the block ends."""
        self.channel = channel
        self._stopped.clear()
        self.beat()
        self._beats = threading.Thread(target=self._beat_until_stopped, daemon=True)
        self._beats.name = "sync-job-heartbeat"
        self._beats.start()
        try:
            yield self
        finally:
            self._stopped.set()
            self._beats.join()
            self._beats = None

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            self.beat()

    def beat(self) -> None:
        """Publish progress and heartbeat, read the cancel flag, touch the working files.

        A cache that fails (Redis down) must not fail the job: it is logged once, and the
        job goes on unwatched."""
        try:
            self.channel.publish(replace(self.snapshot(), heartbeat=time.time()))
            if self.channel.cancel_requested():
                self._cancelled.set()
        except Exception:
            if not self._beat_failed:
                logger.warning("Cannot reach the sync cache; the job goes on.", exc_info=True)
            self._beat_failed = True
        for paths in self._working_paths:
            for path in paths():
                with suppress(FileNotFoundError):  # gone meanwhile: the writer moved on
                    os.utime(path)
