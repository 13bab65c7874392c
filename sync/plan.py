"""The plan of an import: what it does, record by record, stored beside its job.

A plan is a small SQLite file (see docs/plans.md for why not a table of the target database):
one row per record with its table, sync key, action and fields, written in batches while the
import runs and read back a page at a time by table and action. The importer only knows
``PlanRecorder.record`` and ``amend``; how entries are stored is this module's business.

Actions: ``insert``, ``update``, ``delete``, ``skip`` (with a reason), ``unchanged``, and
``conflict`` (reserved for incremental imports). Fields are shown by field name: an update's as
``{"old": …, "new": …}``, an insert's and a deletion's as their values. References are the
referenced record's sync key, M2M sets sorted lists of keys, secrets a marker.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from itertools import zip_longest
from pathlib import Path
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from sync.conf import sync_settings
from sync.errors import SyncError

ACTIONS = ("insert", "update", "delete", "skip", "unchanged", "conflict")
# How a page counts each action (``Plan.summary``); deletions an on_delete rule makes count apart.
COUNTED = {"insert": "new", "update": "updated", "unchanged": "unchanged", "skip": "skipped",
           "delete": "deleted", "conflict": "conflicts"}  # fmt: skip
CASCADE = "cascade"  # how the reason of a deletion made by an on_delete rule begins
BATCH = 2000
SCHEMA = """
CREATE TABLE entry (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, action TEXT NOT NULL,
                    key TEXT NOT NULL, fields TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '');
CREATE INDEX entry_page ON entry (tbl, action, seq);
CREATE INDEX entry_key ON entry (tbl, key);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class PlanError(SyncError):
    """A plan that cannot be read or applied; the message says why, in one line."""


class PlanEncoder(DjangoJSONEncoder):
    """Django's encoder, and binary values as the archive writes them (base64)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, bytes | bytearray | memoryview):
            return base64.b64encode(bytes(o)).decode("ascii")
        return super().default(o)


def dumps(value: Any) -> str:
    # Sorted keys and one encoder: the same record gives the same text in both runs.
    return json.dumps(value, cls=PlanEncoder, sort_keys=True, ensure_ascii=False)


def plan_dir() -> Path:
    return sync_settings.SYNC_PLAN_DIR


def plan_path(label: str, database: list, created: datetime) -> Path:
    """Where job ``label`` (``import-7``) of the database ``database`` (what tells it from
    others: vendor, name, host, port), created at ``created``, keeps its plan. Job numbers are
    per database, several databases may share one plan folder, and a database restored or
    reset numbers its jobs again: the time tells a job from an earlier one of the same name."""
    return plan_dir() / f"{label}-{database_tag(database)}-{created:%Y%m%dT%H%M%S%f}.plan.sqlite3"


def database_tag(database: list) -> str:
    """The part of a plan's file name that tells its database (see ``plan_path``)."""
    return hashlib.sha256(dumps(database).encode()).hexdigest()[:12]


class PlanRecorder:
    """Writes a plan as the import runs: entries in batches, never all in memory.

    Its own SQLite connection commits apart from the import's transaction: a dry run's
    rollback keeps its plan, and writing it takes no lock in the target database."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + SCHEMA)
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO meta VALUES (?, ?)", [(k, dumps(v)) for k, v in meta.items()]
        )
        self.pending: list[tuple] = []

    def record(self, table: str, key: Any, action: str, fields: dict | None = None,
               reason: str = "") -> None:  # fmt: skip
        self.pending.append((table, action, dumps(key), dumps(fields or {}), reason))
        if len(self.pending) >= BATCH:
            self.flush()

    def amend(self, table: str, key: Any, fields: dict) -> None:
        """Add second-pass fields (cycle-closing references) to the record's entry; an
        unchanged record becomes an update."""
        self.flush()
        row = self.db.execute(
            "SELECT seq, action, fields FROM entry WHERE tbl = ? AND key = ?", (table, dumps(key))
        ).fetchone()
        if row is None:
            self.record(table, key, "update", fields)
            return
        seq, action, old = row
        merged = json.loads(old) | json.loads(dumps(fields))
        action = "update" if action == "unchanged" else action
        self.db.execute(
            "UPDATE entry SET action = ?, fields = ? WHERE seq = ?", (action, dumps(merged), seq)
        )

    def flush(self) -> None:
        if self.pending:
            self.db.executemany(
                "INSERT INTO entry (tbl, action, key, fields, reason) VALUES (?, ?, ?, ?, ?)",
                self.pending,
            )
            self.pending = []

    def close(self) -> dict[str, str]:
        """Store the entries and each table's digest; return the digests."""
        self.flush()
        digests = table_digests(self.db)
        self.db.execute("INSERT INTO meta VALUES ('digests', ?)", (dumps(digests),))
        self.db.execute("COMMIT")
        self.db.close()
        return digests

    def discard(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


def table_digests(db: sqlite3.Connection) -> dict[str, str]:
    """sha256 per table of its entries (key, action, fields, reason) in order."""
    digests: dict[str, Any] = {}
    rows = db.execute("SELECT tbl, key, action, fields, reason FROM entry ORDER BY tbl, seq")
    for table, *entry in rows:
        digest = digests.get(table)
        if digest is None:
            digest = digests[table] = hashlib.sha256()
        digest.update("\x1f".join(entry).encode() + b"\x1e")
    return {table: digest.hexdigest() for table, digest in digests.items()}


class Plan:
    """A stored plan, read back a page at a time."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise PlanError(f"No plan at {path}: it was never written, or was removed.")
        self.path = path
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def meta(self) -> dict[str, Any]:
        return {name: json.loads(value) for name, value in self.db.execute("SELECT * FROM meta")}

    def counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        query = "SELECT tbl, action, count(*) FROM entry GROUP BY tbl, action ORDER BY tbl"
        for table, action, n in self.db.execute(query):
            counts.setdefault(table, {})[action] = n
        return counts

    def summary(self) -> dict[str, dict[str, int]]:
        """Per table, the counts a person is shown: new, updated, unchanged, skipped, deleted
        (by the import) and cascaded (by an ``on_delete`` rule of a deleted row), each present
        (0 when none). Two queries over the index: no row of a large plan is read whole."""
        shown = dict.fromkeys([*dict.fromkeys(COUNTED.values()), "cascaded"], 0)
        summary: dict[str, dict[str, int]] = {}
        for table, actions in self.counts().items():
            counts = summary[table] = dict(shown)
            for action, n in actions.items():
                counts[COUNTED[action]] += n
        cascades = (
            "SELECT tbl, count(*) FROM entry WHERE action = 'delete' AND reason LIKE ? || '%'"
            " GROUP BY tbl"
        )
        for table, n in self.db.execute(cascades, (CASCADE,)):
            summary[table]["deleted"] -= n
            summary[table]["cascaded"] += n
        return summary

    def entry(self, table: str, key: Any) -> dict | None:
        """The entry of the record ``key`` of ``table``, or None."""
        row = self.db.execute(
            "SELECT action, fields, reason FROM entry WHERE tbl = ? AND key = ?",
            (table, dumps(key)),
        ).fetchone()
        if row is None:
            return None
        action, fields, reason = row
        entry = {"table": table, "action": action, "key": key, "fields": json.loads(fields)}
        return entry | ({"reason": reason} if reason else {})

    def entries(self, table: str | None = None, action: str | None = None,
                offset: int = 0, limit: int | None = None,
                changes_only: bool = False) -> Iterator[dict]:  # fmt: skip
        """Entries in the order the import met them, filtered (``changes_only``: not the
        unchanged); streamed from the file."""
        where, params = [], []
        if table:
            where.append("tbl = ?")
            params.append(table)
        if action:
            where.append("action = ?")
            params.append(action)
        if changes_only:
            where.append("action != 'unchanged'")
        order = "tbl, action, seq" if table and action else "seq"
        sql = "SELECT tbl, action, key, fields, reason FROM entry"
        sql += f" WHERE {' AND '.join(where)}" if where else ""
        sql += f" ORDER BY {order} LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        for tbl, act, key, fields, reason in self.db.execute(sql, params):
            entry = {"table": tbl, "action": act, "key": json.loads(key)}
            entry["fields"] = json.loads(fields)
            yield entry | ({"reason": reason} if reason else {})

    def page(self, number: int, size: int, table: str | None = None,
             action: str | None = None, changes_only: bool = False) -> list[dict]:  # fmt: skip
        """Page ``number`` (from 1) of ``size`` entries."""
        return list(self.entries(table, action, (number - 1) * size, size, changes_only))

    def changes(self, table: str) -> Iterator[dict]:
        """A table's entries that change something or are left out (not the unchanged)."""
        for entry in self.entries(table):
            if entry["action"] != "unchanged":
                yield entry

    def tables(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT tbl, count(*) FROM entry GROUP BY tbl"))

    def table_entries(self, table: str) -> Iterator[tuple]:
        yield from self.db.execute(
            "SELECT key, action, fields, reason FROM entry WHERE tbl = ? ORDER BY seq", (table,)
        )

    def close(self) -> None:
        self.db.close()


def differences(planned: Plan, done: Plan, tables: list[str], limit: int = 3) -> list[str]:
    """The first records (``table key``) where what was done differs from the plan."""
    found = []
    for table in tables:
        mine, theirs = planned.table_entries(table), done.table_entries(table)
        for a, b in zip_longest(mine, theirs):
            if a != b:
                found.append(f"{table} {json.loads((a or b)[0])!r}")
                break
        if len(found) >= limit:
            break
    return found
