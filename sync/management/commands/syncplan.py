from django.core.management.base import CommandError

from sync.jobs.lifecycle import NAME_HELP, JobError, find_job
from sync.jobs.plans import plan_of
from sync.management.base import SyncCommand
from sync.management.database import usable_database
from sync.management.plans import entry_lines
from sync.models import ImportRun
from sync.plan import ACTIONS, Plan, PlanError, dumps


class Command(SyncCommand):
    help = (
        "Page through the plan an import job stored (what its dry run would do, record by "
        "record; see docs/plans.md): its counts by table and action, or one page of its "
        "entries, filtered by --table and --action. " + NAME_HELP
    )

    def add_arguments(self, parser):
        parser.add_argument("job", help="The import job (import-7).")
        parser.add_argument("--table", help="Only this table (app.Model).")
        parser.add_argument("--action", choices=ACTIONS, help="Only this action.")
        parser.add_argument("--page", type=int, help="Page number, from 1 (without: the counts).")
        parser.add_argument("--page-size", type=int, default=50, help="Entries a page (50).")
        parser.add_argument("--json", action="store_true", help="Print as JSON.")
        parser.add_argument("--database", default="default", help="Database alias of the job.")

    def handle(self, *args, **options):
        using = usable_database(options["database"])
        if (options["page"] is not None and options["page"] < 1) or options["page_size"] < 1:
            raise CommandError("--page and --page-size count from 1.")
        try:
            job = find_job(options["job"], using)
            if not isinstance(job, ImportRun):
                raise CommandError(f"{job.label} is an export: only imports have plans.")
            plan = Plan(plan_of(job))
        except (JobError, PlanError) as exc:
            raise CommandError(str(exc)) from exc
        try:
            if options["page"] is None:
                self.counts(plan, options["json"])
            else:
                self.page(plan, options)
        finally:
            plan.close()

    def counts(self, plan: Plan, as_json: bool) -> None:
        counts = plan.counts()
        if as_json:
            self.stdout.write(dumps(counts))
            return
        for table, actions in counts.items():
            shown = ", ".join(f"{n} {action}" for action, n in sorted(actions.items()))
            self.stdout.write(f"{table}: {shown}")

    def page(self, plan: Plan, options) -> None:
        entries = plan.page(
            options["page"], options["page_size"], options["table"], options["action"]
        )
        if options["json"]:
            self.stdout.write(dumps(entries))
            return
        for entry in entries:
            for line in entry_lines(entry, "", table=True):
                self.stdout.write(line)
