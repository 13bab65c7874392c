"""A site run as production runs it: ``manage.py`` commands (and ``tests.busy_site``) as
processes of their own, against a database of the test's own that ``DATABASE_URL`` names —
a SQLite file (pytest's SQLite test database lives in this process's memory), or one of
pytest's PostgreSQL and MariaDB test databases."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connections

from sync.models import ImportRun
from tests.fingerprint import fingerprint

ROOT = Path(__file__).resolve().parent.parent
SCHEMES = {"postgresql": "postgres", "mysql": "mysql"}


def database_url(alias: str) -> str:
    """The URL of the database ``alias`` is connected to (during tests: its test database)."""
    connection = connections[alias]
    config = connection.settings_dict
    password = f":{config['PASSWORD']}" if config["PASSWORD"] else ""
    return (
        f"{SCHEMES[connection.vendor]}://{config['USER']}{password}@{config['HOST']}:"
        f"{config['PORT']}/{config['NAME']}"
    )


@dataclass
class Site:
    url: str
    backups: Path
    alias: str | None = None  # the database's alias in this process; None: a SQLite file
    settings: dict[str, str] = field(default_factory=dict)  # more of the processes' environment

    @classmethod
    def sqlite(cls, folder: Path) -> Site:
        return cls(f"sqlite:///{folder / 'site.sqlite3'}", folder / "backups")

    @property
    def sqlite_file(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SYNC_EXTRA_DATABASES"}
        env.update(
            DATABASE_URL=self.url,
            BACKUP_DIR=str(self.backups),
            DJANGO_SETTINGS_MODULE="crearis.settings",
        )
        env.update(self.settings)
        return env

    def command(self, *args: str | Path) -> list[str]:
        """``manage.py`` ARGS, or ``python -m MODULE`` ARGS when the first is ``-m``."""
        head = [] if args[0] == "-m" else ["manage.py"]
        return [sys.executable, *head, *map(str, args)]

    def run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            self.command(*args), cwd=ROOT, env=self.env(), capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        if check and done.returncode:
            raise AssertionError(f"{args} failed ({done.returncode}): {done.stderr}")
        return done

    def start(self, *args: str | Path) -> subprocess.Popen:
        """Start a process in a process group of its own, as a terminal starts a command (so
        ``os.killpg`` reaches it and its children, as Ctrl-C does)."""
        return subprocess.Popen(
            self.command(*args), cwd=ROOT, env=self.env(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    def build(self, events: int) -> None:
        """A migrated SQLite site holding the system data and ``events`` demo events."""
        self.run("migrate", "-v0")
        self.run("syncseed")
        self.run("syncdemo", "--events", str(events))

    # -- reading the site's database from this process ---------------------------------------
    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run ``sql`` on a SQLite site's file directly, without Django."""
        with closing(sqlite3.connect(self.sqlite_file, timeout=30)) as connection:
            return connection.execute(sql, params).fetchall()

    def content_fingerprint(self) -> dict:
        """Every content table's rows, ids included, as a digest per table."""
        if self.alias:
            return fingerprint(self.alias)
        tables = self.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'content_%'"
        )
        return {
            name: hashlib.sha256(
                repr(self.query(f'SELECT * FROM "{name}" ORDER BY rowid')).encode()
            ).hexdigest()
            for (name,) in tables
        }

    def import_runs(self) -> list[tuple]:
        """(id, status, pid, error) of every ImportRun, oldest first."""
        if self.alias:
            runs = ImportRun.objects.using(self.alias).order_by("pk")
            return list(runs.values_list("pk", "status", "pid", "error"))
        return self.query("SELECT id, status, pid, error FROM sync_importrun ORDER BY id")
