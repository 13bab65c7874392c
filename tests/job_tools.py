"""Helpers for tests of jobs: a reporter that calls back as the engine advances, a large
archive made fast, the sync cache as other processes are told of it, and a job watched as
another process sees it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from sync.archive import FORMAT_NAME, FORMAT_VERSION, ArchiveWriter
from sync.jobs.lifecycle import JobState
from sync.jobs.reporter import JobReporter
from sync.models import Job


class CallbackListener:
    """A progress listener that calls ``on_advance(count)`` at every step of the engine,
    ``on_phase(phase)`` at every phase and ``on_total(total)`` when a total is known."""

    def __init__(
        self,
        on_advance: Callable[[int], None] = lambda count: None,
        on_phase: Callable[[str], None] = lambda phase: None,
        on_total: Callable[[int | None], None] = lambda total: None,
    ):
        self.on_advance = on_advance
        self.on_phase = on_phase
        self.on_total = on_total

    def total(self, total: int | None) -> None:
        self.on_total(total)

    def advance(self, count: int) -> None:
        self.on_advance(count)

    def phase(self, phase: str) -> None:
        self.on_phase(phase)


def reporter_calling(
    on_advance: Callable[[int], None] = lambda count: None,
    on_phase: Callable[[str], None] = lambda phase: None,
    on_total: Callable[[int | None], None] = lambda total: None,
) -> JobReporter:
    return JobReporter(CallbackListener(on_advance, on_phase, on_total))


TAG_FIELDS = {
    "name": "CharField",
    "description": "TextField",
    "name_i18n": "JSONField",
    "desc_i18n": "JSONField",
    "created_at": "DateTimeField",
    "updated_at": "DateTimeField",
}


def many_tags_archive(path: Path, count: int) -> Path:
    """An uncompressed archive of ``count`` tags (tag-0000001, …), written in a second or two:
    an import of it takes long enough to be watched and cancelled."""
    stamp = "2026-01-02T03:04:05.000006Z"
    with ArchiveWriter(path, "none") as writer:
        spool = writer.add_table("content.Tag")
        block = 20000
        for start in range(0, count, block):
            lines = [
                b'{"name":"tag-%07d","description":"","name_i18n":{},"desc_i18n":{},'
                b'"created_at":"%s","updated_at":"%s"}\n' % (n, stamp.encode(), stamp.encode())
                for n in range(start, min(start + block, count))
            ]
            spool.write_line(b"".join(lines))
            spool.count += len(lines) - 1
        index = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "backup_id": "00000000-0000-4000-8000-000000000009",
            "kind": "full",
            "created_at": "2026-01-02T03:04:05+00:00",
            "compression": "none",
            "include_secrets": False,
            "tables": [
                {
                    "model": "content.Tag",
                    "db_table": "content_tag",
                    "key_fields": ["name"],
                    "fields": TAG_FIELDS,
                    "references": {},
                    "count": spool.count,
                    "member": spool.name,
                    "size": spool.size,
                    "sha256": spool.sha256.hexdigest(),
                }
            ],
            "total_records": spool.count,
        }
        writer.finish(index)
    return path


def cache_url() -> str:
    """The sync cache of this test run, as a URL other processes can be given."""
    return f"filecache://{settings.CACHES['sync']['LOCATION']}"


def watch(job: Job, until: Callable[[JobState], bool], timeout: float = 120) -> list[JobState]:
    """Read ``job`` as another process sees it (its row, the sync cache) every 50 ms until
    ``until(state)``; return every state read."""
    states = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        states.append(JobState.of(job))
        if until(states[-1]):
            return states
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s; last: {states[-1:]}")


def running_with_records(state: JobState) -> bool:
    return state.status == Job.Status.RUNNING and state.done > 0
