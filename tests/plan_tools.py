"""Reading a job's stored plan in tests (see sync/plan.py)."""

from sync.jobs.plans import plan_of
from sync.models import ImportRun
from sync.plan import Plan


def plan_entries(run: ImportRun, table: str | None = None, action: str | None = None) -> list:
    plan = Plan(plan_of(run))
    try:
        return list(plan.entries(table, action))
    finally:
        plan.close()


def changes(run: ImportRun, table: str | None = None) -> list:
    """The entries that change something or leave a record out (not the unchanged)."""
    return [e for e in plan_entries(run, table) if e["action"] != "unchanged"]
