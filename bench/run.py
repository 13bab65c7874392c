"""Export (and, later, import) speed of Crearis Sync against Django's and PostgreSQL's own tools.

Builds the demo data set at a given size on SQLite and/or PostgreSQL, then runs every timed step
as its own subprocess under ``/usr/bin/time -v`` (peak memory) and reports rows per second,
output size and peak memory, as a table on the terminal and as Markdown under
``bench/results/``::

    .venv/bin/python bench/run.py --events 20000 --db both
    .venv/bin/python bench/run.py --events 120000 --db sqlite --only syncexport-none

The bench never touches the project's own databases: SQLite lives in ``bench/results/`` and
PostgreSQL in a database of its own (``crearis_bench``). A timed step is a ``Step`` in
``STEPS``; adding one (an import, say) is adding an entry there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/crearis-bench"))
PYTHON = sys.executable
MANAGE = [PYTHON, str(ROOT / "manage.py")]
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
PG_SERVER = os.environ.get("BENCH_PG_SERVER", "postgres://postgres@127.0.0.1:5432")
PG_NAME = os.environ.get("BENCH_PG_NAME", "crearis_bench")
COMPRESSIONS = ("none", "gz", "zst", "xz", "bz2")


@dataclass
class Database:
    """One database the bench builds and measures."""

    vendor: str  # "sqlite" or "postgres"
    events: int
    rows: int = 0  # records in the content app (what every tool writes), set after building
    suffix: str = ""  # "-import": the database imports go into

    @property
    def name(self) -> str:
        if self.vendor == "sqlite":
            return str(RESULTS / f"bench-{self.events}{self.suffix}.sqlite3")
        return PG_NAME + self.suffix.replace("-", "_")

    @property
    def url(self) -> str:
        if self.vendor == "sqlite":
            return f"sqlite:///{self.name}"
        return f"{PG_SERVER}/{self.name}"

    def env(self) -> dict[str, str]:
        # Archives written by syncexport go where each step says (--output); BACKUP_DIR is only
        # a fallback that keeps the project's var/ clean.
        # DEBUG=False as in production: with DEBUG, Django keeps the text of the last 9,000
        # queries of every tool measured here.
        # Bytecode is cached as in production: where PYTHONDONTWRITEBYTECODE is set (as on our
        # CI machines), every step would compile the project's modules again (~0.15 s CPU).
        inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {
            **inherited,
            "PYTHONPYCACHEPREFIX": str(WORK / "pycache"),
            "DATABASE_URL": self.url,
            "BACKUP_DIR": str(WORK / "backups"),
            "DEBUG": "False",
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-secret"),
        }


@dataclass
class Step:
    """A timed command. ``command`` gets the database and an empty directory for its output;
    when ``stdout_file`` is set, the command's stdout is written there (dumpdata)."""

    name: str
    tool: str
    command: Callable[[Database, Path], list[str]]
    stdout_file: str | None = None
    vendors: tuple[str, ...] = ("sqlite", "postgres")
    prepare: Callable[[Database, Path], None] | None = None
    into_target: bool = False  # runs against the import target, not the bench database


@dataclass
class Measurement:
    database: str
    step: str
    tool: str
    rows: int
    seconds: float
    output_bytes: int
    peak_rss_kb: int | None
    cpu_seconds: float | None = None  # user + system, the command and its children
    extra: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# -- steps -----------------------------------------------------------------------------------


def syncexport(compression: str) -> Step:
    return Step(
        name=f"syncexport-{compression}",
        tool=f"syncexport --compression {compression}",
        command=lambda db, out: [
            *MANAGE,
            "syncexport",
            "--tables",
            "content",
            "--compression",
            compression,
            "--output",
            str(out),
            "--quiet",
        ],
    )


def pg_dump(db: Database, out: Path) -> list[str]:
    return [
        "pg_dump",
        "--data-only",
        "--table=content_*",
        f"--file={out / 'dump.sql'}",
        db.url,
    ]


def step_dir(db: Database, step: str) -> Path:
    """Where a step writes its output (kept apart per data set size)."""
    return WORK / f"{db.vendor}-{db.events}" / step


def target(db: Database) -> Database:
    """The empty database imports go into (the bench database stays as built)."""
    return Database(db.vendor, db.events, db.rows, suffix="-import")


def fresh_target(db: Database, out: Path) -> None:
    """An empty, migrated database: no system data, no content."""
    empty = target(db)
    if db.vendor == "sqlite":
        Path(empty.name).unlink(missing_ok=True)
    else:
        recreate_pg_database(empty.name)
    manage(empty, "migrate", "--no-input", "-v0")


def archive_of(db: Database) -> str:
    """The uncompressed archive the syncexport-none step wrote."""
    found = sorted(step_dir(db, "syncexport-none").glob("*.backup.tar"))
    if not found:
        raise SystemExit("The import steps need the syncexport-none step's archive: run it too.")
    return str(found[-1])


UPDATED_TABLES = ("content_project", "content_image", "content_instructor", "content_location",
                  "content_event", "content_post", "content_participant")  # fmt: skip


def change_one_percent(db: Database, out: Path) -> None:
    """Edit 1% of the target's rows and make them older, so an update takes the archive's."""
    sql = ";".join(
        f"UPDATE {t} SET name = name || ' (edited)', updated_at = '2020-01-01 00:00:00'"
        " WHERE id % 100 = 0"
        for t in UPDATED_TABLES
    )
    sql = f"from django.db import connection; connection.cursor().executescript({sql!r})"
    if db.vendor == "postgres":
        sql = sql.replace("executescript", "execute")
    manage(target(db), "shell", "-v0", "-c", sql)


def syncimport(mode: str) -> Callable[[Database, Path], list[str]]:
    return lambda db, out: [*MANAGE, "syncimport", archive_of(db), "--mode", mode, "--no-input",
                            "--quiet"]  # fmt: skip


def loaddata(db: Database, out: Path) -> list[str]:
    return [*MANAGE, "loaddata", str(step_dir(db, "dumpdata") / "dump.json"), "-v0"]


def syncverify(db: Database, out: Path) -> list[str]:
    return [*MANAGE, "syncverify", archive_of(db)]


def dry_run_with_plan(db: Database, out: Path) -> list[str]:
    return [*MANAGE, "syncimport", archive_of(db), "--dry-run", "--quiet"]


PAGE_1000 = """
import time
from sync.jobs.plans import plan_of
from sync.models import ImportRun
from sync.plan import Plan
plan = Plan(plan_of(ImportRun.objects.filter(dry_run=True).latest("pk")))
start = time.perf_counter()
page = plan.page(1000, 50, "content.Participant", "insert")
print(f"page 1000 of content.Participant inserts: {len(page)} entries in "
      f"{(time.perf_counter() - start) * 1000:.1f} ms")
"""


def plan_page(db: Database, out: Path) -> list[str]:
    return [*MANAGE, "shell", "-v0", "-c", PAGE_1000]


# Steps run in this order: each import needs what the steps before it left.
IMPORT_STEPS = [
    Step("verify", "syncverify (no database)", syncverify),
    Step("import-replace-empty", "syncimport --mode replace (empty db)", syncimport("replace"),
         prepare=fresh_target, into_target=True),
    Step("import-replace-same", "syncimport --mode replace (identical db)", syncimport("replace"),
         into_target=True),
    Step("import-update-1pct", "syncimport --mode update (1% changed)", syncimport("update"),
         prepare=change_one_percent, into_target=True),
    Step("loaddata", "loaddata dumpdata.json (empty db)", loaddata, prepare=fresh_target,
         into_target=True),
    Step("import-dry-run-plan", "syncimport --dry-run, plan stored (empty db)",
         dry_run_with_plan, prepare=fresh_target, into_target=True),
    Step("plan-page-1000", "read page 1,000 of the dry run's plan", plan_page,
         stdout_file="page.txt", into_target=True),
]  # fmt: skip


STEPS: list[Step] = [
    *[syncexport(c) for c in COMPRESSIONS],
    Step(
        name="dumpdata",
        tool="dumpdata content",
        command=lambda db, out: [*MANAGE, "dumpdata", "content"],
        stdout_file="dump.json",
    ),
    Step(
        name="dumpdata-natural",
        tool="dumpdata content --natural-foreign --natural-primary",
        command=lambda db, out: [
            *MANAGE,
            "dumpdata",
            "content",
            "--natural-foreign",
            "--natural-primary",
        ],
        stdout_file="dump.json",
    ),
    *IMPORT_STEPS,
    Step(
        name="pg_dump",
        tool="pg_dump --data-only content_*",
        command=pg_dump,
        vendors=("postgres",),
    ),
]


# -- running ---------------------------------------------------------------------------------


def run(
    argv: list[str], env: dict[str, str], stdout_path: Path | None = None
) -> tuple[float, int | None, float | None, str]:
    """Run ``argv``; return (wall seconds, peak RSS in kB or None, CPU seconds or None, stdout
    text). CPU seconds (user + system, of the command and the children it waited for) are what
    to compare on a shared machine, where wall times swing with the others' load."""
    time_file = WORK / "time.txt"
    full = [TIME, "-v", "-o", str(time_file), *argv] if TIME else argv
    stdout = open(stdout_path, "wb") if stdout_path else subprocess.PIPE  # noqa: SIM115
    started = time.perf_counter()
    try:
        proc = subprocess.run(full, env=env, stdout=stdout, stderr=subprocess.PIPE, cwd=ROOT)
    finally:
        if stdout_path:
            stdout.close()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr.decode()}")
    peak = cpu = None
    if TIME:
        report = time_file.read_text()
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
        peak = int(match.group(1)) if match else None
        used = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", report)
        cpu = sum(map(float, used)) if len(used) == 2 else None
    else:
        import resource

        # Only a lower bound when several children ran: the largest of them so far.
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    text = proc.stdout.decode() if proc.stdout else ""
    return seconds, peak, cpu, text


def manage(db: Database, *args: str) -> str:
    return run([*MANAGE, *args], db.env())[3]


def build(db: Database, reuse: bool) -> float | None:
    """Make the database hold syncseed + syncdemo --events N; return syncdemo's seconds."""
    marker = RESULTS / f".built-{db.vendor}-{db.events}"
    if reuse and marker.exists() and marker.read_text().strip() == f"{db.url} {db.events}":
        return None
    marker.unlink(missing_ok=True)
    if db.vendor == "sqlite":
        Path(db.name).unlink(missing_ok=True)
    else:
        recreate_pg_database(db.name)
    manage(db, "migrate", "--no-input", "-v0")
    manage(db, "syncseed", "-v0")
    seconds = run([*MANAGE, "syncdemo", "--events", str(db.events)], db.env())[0]
    marker.write_text(f"{db.url} {db.events}\n")
    return seconds


def recreate_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


COUNT_ROWS = (
    "from django.apps import apps; "
    "print(sum(m._default_manager.count() for m in apps.get_app_config('content').get_models()))"
)


def measure(db: Database, step: Step) -> Measurement:
    out = step_dir(db, step.name)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if step.prepare:
        step.prepare(db, out)
    stdout_path = out / step.stdout_file if step.stdout_file else None
    env = target(db).env() if step.into_target else db.env()
    seconds, peak, cpu, _ = run(step.command(db, out), env, stdout_path)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return Measurement(db.vendor, step.name, step.tool, db.rows, seconds, size, peak, cpu)


# -- reporting -------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def mib(n: float | None) -> str:
    return "—" if n is None else f"{n / 1024 / 1024:.1f}"


def table(measurements: list[Measurement]) -> list[list[str]]:
    rows = [["db", "step", "rows", "seconds", "CPU s", "rows/s", "output MiB", "peak RSS MiB",
             "vs dumpdata", "vs natural"]]  # fmt: skip
    base = {(m.database, m.step): m.rows_per_second for m in measurements}
    for m in measurements:
        plain = base.get((m.database, "dumpdata"))
        natural = base.get((m.database, "dumpdata-natural"))
        rows.append([
            m.database, m.step, str(m.rows), f"{m.seconds:.2f}",
            "—" if m.cpu_seconds is None else f"{m.cpu_seconds:.2f}", f"{m.rows_per_second:,.0f}",
            mib(m.output_bytes), mib(m.peak_rss_kb * 1024 if m.peak_rss_kb else None),
            f"{m.rows_per_second / plain:.1f}x" if plain else "—",
            f"{m.rows_per_second / natural:.1f}x" if natural else "—",
        ])  # fmt: skip
    return rows


def plain_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="syncdemo --events (20000)")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--only", nargs="+", metavar="STEP", help="Run only these steps.")
    parser.add_argument("--skip", nargs="+", metavar="STEP", default=[], help="Leave out steps.")
    parser.add_argument(
        "--reuse", action="store_true", help="Keep a database already built at this size."
    )
    parser.add_argument("--repeat", type=int, default=1, help="Runs per step; the best is kept.")
    args = parser.parse_args()

    RESULTS.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    vendors = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    steps = [s for s in STEPS if (not args.only or s.name in args.only) and s.name not in args.skip]
    command = " ".join(["python bench/run.py", *sys.argv[1:]])
    print(f"{command}\n{machine()}\n/usr/bin/time: {'yes' if TIME else 'no (getrusage)'}")

    measurements: list[Measurement] = []
    builds: dict[str, str] = {}
    for vendor in vendors:
        db = Database(vendor, args.events)
        seconds = build(db, args.reuse)
        db.rows = int(manage(db, "shell", "-v0", "-c", COUNT_ROWS).split()[-1])
        builds[vendor] = "reused" if seconds is None else f"{seconds:.1f} s"
        print(f"{vendor}: {db.rows} rows (syncdemo: {builds[vendor]})")
        for step in steps:
            if vendor not in step.vendors:
                continue
            best = min((measure(db, step) for _ in range(args.repeat)), key=lambda m: m.seconds)
            measurements.append(best)
            print(f"  {step.name}: {best.seconds:.2f} s (CPU {best.cpu_seconds or 0:.2f} s), "
                  f"{best.rows_per_second:,.0f} rows/s, "
                  f"{mib(best.output_bytes)} MiB, peak {mib((best.peak_rss_kb or 0) * 1024)} MiB",
                  flush=True)  # fmt: skip

    rows = table(measurements)
    print()
    print(plain_text(rows))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = RESULTS / f"{stamp}-events{args.events}-{args.db}.md"
    report.write_text(
        f"# Bench {stamp}\n\n`{command}`\n\n{machine()}\n\n"
        + "".join(f"- {v}: syncdemo {b}\n" for v, b in builds.items())
        + f"\n{markdown(rows)}\n"
    )
    (report.with_suffix(".json")).write_text(
        json.dumps([m.__dict__ for m in measurements], indent=2)
    )
    print(f"\nwritten: {report.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
