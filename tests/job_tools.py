"""Helpers for tests of jobs: a reporter that calls back as the engine advances, a large
archive made fast, and a site that other processes work on (``Site``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from django.conf import settings
from django.db import connections

from sync.archive import FORMAT_NAME, FORMAT_VERSION, ArchiveWriter
from sync.jobs.reporter import JobReporter

ROOT = Path(__file__).resolve().parent.parent


class CallbackListener:
    """A progress listener that calls ``on_advance(count)`` at every step of the engine and
    ``on_phase(phase)`` at every phase."""

    def __init__(
        self,
        on_advance: Callable[[int], None] = lambda count: None,
        on_phase: Callable[[str], None] = lambda phase: None,
    ):
        self.on_advance = on_advance
        self.on_phase = on_phase

    def total(self, total: int | None) -> None:
        pass

    def advance(self, count: int) -> None:
        self.on_advance(count)

    def phase(self, phase: str) -> None:
        self.on_phase(phase)


def reporter_calling(
    on_advance: Callable[[int], None] = lambda count: None,
    on_phase: Callable[[str], None] = lambda phase: None,
) -> JobReporter:
    return JobReporter(CallbackListener(on_advance, on_phase))


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


@dataclass
class Site:
    """A database that other processes (``manage.py`` commands) work on, with the sync cache
    and backup folder they share with each other and with this test."""

    url: str
    tmp: Path
    children: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if k != "SYNC_EXTRA_DATABASES"}
        return keep | {
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "DATABASE_URL": self.url,
            "BACKUP_DIR": str(self.tmp / "backups"),
            "SYNC_CACHE_URL": cache_url(),
            "SYNC_JOB_STALE_AFTER": "3",
        }

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
        return done

    def spawn(self, *args: str) -> subprocess.Popen:
        child = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.children.append(child)
        return child

    def jobs(self) -> list[dict]:
        return orjson.loads(self.manage("syncjobs", "--json").stdout)

    def fingerprint(self) -> dict:
        code = (
            "import django, orjson; django.setup(); from tests.fingerprint import fingerprint; "
            "print(orjson.dumps(fingerprint()).decode())"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)

    def wait_for_job(self, test: Callable[[dict], bool], timeout: float = 60) -> dict:
        """Poll ``syncjobs --json`` until a job passes ``test``; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [job for job in self.jobs() if test(job)]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no job matched within {timeout} s: {self.jobs()}")

    def stop_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
            child.communicate()


def cache_url() -> str:
    """The sync cache of this test run, as a URL other processes can be given."""
    return f"filecache://{settings.CACHES['sync']['LOCATION']}"


def database_url(alias: str) -> str:
    """A URL of the (test) database behind ``alias``, for another process."""
    config = connections[alias].settings_dict
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connections[alias].vendor]
    password = f":{config['PASSWORD']}" if config["PASSWORD"] else ""
    port = f":{config['PORT']}" if config["PORT"] else ""
    return f"{scheme}://{config['USER']}{password}@{config['HOST']}{port}/{config['NAME']}"
