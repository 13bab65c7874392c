import getpass
from collections.abc import Iterable

import orjson
from django.core.management.base import CommandError

from sync.errors import SyncError
from sync.importer import MODES, ImportFailed, ImportResult
from sync.jobs.imports import apply_plan, run_import, start_import
from sync.jobs.plans import apply_options, plan_of
from sync.jobs.reporter import JobCancelled, JobReporter
from sync.management.background import hand_over, require_worker
from sync.management.base import SyncCommand
from sync.management.database import usable_database
from sync.management.plans import entry_lines
from sync.management.progress import ProgressBar
from sync.management.prompts import confirmed
from sync.models import ImportRun
from sync.plan import Plan, dumps
from sync.storage import locate_archive


class Command(SyncCommand):
    help = (
        "Import a backup archive, matching records by sync key (xmlid / natural key / primary "
        "key), never by database id. Modes: replace (default; the tables end up exactly as in "
        "the archive), update (insert new, overwrite where the archive's updated_at is newer), "
        "append (insert only new keys). The archive is verified before the first write and the "
        "whole import is one transaction. --dry-run shows what would change and writes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "archive",
            nargs="?",
            help="The archive to import: a local path, or a name in the archive storage (an "
            "existing local path wins). Not with --apply-plan.",
        )
        parser.add_argument(
            "--apply-plan",
            metavar="JOB",
            help="Apply the plan of a dry run (import-7): its archive, with its options; refused "
            "if the outcome would differ from what it previewed.",
        )
        parser.add_argument("--mode", choices=MODES, default="replace")
        parser.add_argument("--tables", nargs="+", metavar="T", help="Only these tables.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Show the changes; write nothing at all."
        )
        parser.add_argument(
            "--show-changes",
            action="store_true",
            help="List each changed record with its changed fields (old → new).",
        )
        parser.add_argument("--json", action="store_true", help="Print the diff as JSON.")
        parser.add_argument("--no-input", action="store_true", help="Do not ask for confirmation.")
        parser.add_argument("--database", default="default", help="Database alias to import into.")
        parser.add_argument("--quiet", action="store_true", help="No progress, no summary.")
        parser.add_argument(
            "--drop-unresolved",
            action="store_true",
            help="Leave out records whose generic reference (content type + object id) names a "
            "row that is neither in the archive nor in the database, and report them, instead "
            "of refusing the import.",
        )
        parser.add_argument(
            "--async",
            action="store_true",
            dest="in_background",
            help="Hand the import to a Celery worker, print the job's name (import-7) and "
            "return at once; follow it with syncjobs --watch. Only with --no-input or "
            "--apply-plan (a worker cannot ask). Needs CELERY_BROKER_URL.",
        )

    def handle(self, *args, **options):
        usable_database(options["database"])
        if bool(options["archive"]) == bool(options["apply_plan"]):
            raise CommandError("Give an archive to import, or --apply-plan JOB (not both).")
        quiet = options["quiet"] or options["verbosity"] == 0
        details = options["show_changes"] or options["json"]
        plan = options["apply_plan"]
        if options["in_background"]:
            return self.hand_over(options, quiet, details)
        # --json asks like any other import: it changes the database all the same.
        confirm = not (options["dry_run"] or options["no_input"])
        if confirm and not plan:
            preview, run = self.run(options, dry_run=True, details=details, quiet=quiet)
            self.report(preview, run, options)
            if preview.total_changes == 0:
                self.stdout.write("Nothing to change.")
                return
            plan = run.label  # what is applied is exactly what was shown
        if confirm and not confirmed(self.stdout, "These changes will be applied."):
            raise CommandError("Import cancelled; nothing was changed.")
        result, run = self.run(
            options, dry_run=options["dry_run"], details=details, quiet=quiet, plan=plan
        )
        if (not (confirm and not options["apply_plan"]) and not quiet) or options["json"]:
            self.report(result, run, options)
        if not options["dry_run"] and not quiet and not options["json"]:
            self.stdout.write(
                self.style.SUCCESS(f"Imported: {result.total_changes} records changed.")
            )

    def run(self, options, dry_run: bool, details: bool, quiet: bool, plan: str | None = None):
        title = "dry run" if dry_run else "import"
        common = {
            "using": options["database"],
            "collect_changes": details,
            "started_by": f"syncimport ({getpass.getuser()})",
        }
        with ProgressBar(title, enabled=not quiet and not options["json"]) as bar:
            try:
                if plan:
                    if dry_run:
                        raise ImportFailed("--apply-plan applies a plan: not with --dry-run.")
                    return apply_plan(plan, reporter=JobReporter(bar), **common)
                return run_import(
                    options["archive"],
                    mode=options["mode"],
                    dry_run=dry_run,
                    tables=options["tables"],
                    reporter=JobReporter(bar),
                    drop_unresolved=options["drop_unresolved"],
                    **common,
                )
            except (ImportFailed, JobCancelled) as exc:
                raise CommandError(str(exc)) from exc
            except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: rolled back, recorded
                what = "Dry run" if dry_run else "Import"
                raise CommandError(f"{what} interrupted; nothing was changed.") from exc

    def hand_over(self, options, quiet: bool, details: bool) -> None:
        """Create the import job (queued) and hand it to a worker."""
        plan = options["apply_plan"]
        if not (options["no_input"] or plan):
            raise CommandError(
                "--async cannot ask for confirmation: add --no-input, or preview with --dry-run "
                "and queue what it showed with --apply-plan JOB --async."
            )
        if plan and options["dry_run"]:
            raise CommandError("--apply-plan applies a plan: not with --dry-run.")
        require_worker()
        using = options["database"]
        common = {"collect_changes": details, "started_by": f"syncimport ({getpass.getuser()})"}
        try:
            if plan:
                run = start_import(**apply_options(plan, using), **common)
            else:
                location = locate_archive(options["archive"])
                if location.path is None:  # a name in the archive storage, which workers share
                    archive = location.text
                elif location.path.is_file():
                    archive = location.path.resolve()  # the worker has another cwd
                else:  # the job could only fail: no job at all
                    raise ImportFailed(f"There is no archive at {location.path.resolve()}.")
                run = start_import(
                    archive,
                    mode=options["mode"],
                    dry_run=options["dry_run"],
                    tables=options["tables"],
                    drop_unresolved=options["drop_unresolved"],
                    using=using,
                    **common,
                )
        except SyncError as exc:  # ImportFailed, or the archive's name or storage
            raise CommandError(str(exc)) from exc
        hand_over(self, run, quiet)

    def report(self, result: ImportResult, run: ImportRun, options) -> None:
        path = plan_of(run)
        plan = Plan(path) if path.is_file() else None
        try:
            if options["json"]:
                self.report_json(result, run, plan)
            else:
                self.report_text(result, run, plan if options["show_changes"] else None)
        finally:
            if plan is not None:
                plan.close()

    def report_text(self, result: ImportResult, run: ImportRun, plan: Plan | None) -> None:
        title = "Changes preview" if result.dry_run else "Changes"
        self.stdout.write(f"{title} ({result.mode} mode, {run.label}):")
        for diff in result.tables.values():
            line = f"  {diff.name}: {diff.new} new, {diff.updated} updated, {diff.deleted} deleted"
            extra = [f"{diff.unchanged} unchanged"] + (
                [f"{diff.skipped} skipped"] if diff.skipped else []
            )
            if diff.same_stamp:
                extra.append(f"{diff.same_stamp} with the target's updated_at but other content")
            if diff.dropped:
                extra.append(f"{diff.dropped} dropped: unresolved generic references")
            self.stdout.write(f"{line} ({', '.join(extra)})")
            for note in diff.notes:
                self.stdout.write(f"    note: {note}")
            if plan is not None:
                self.write_entries(plan.changes(diff.label))
        for name, count in result.cascaded.items():
            self.stdout.write(f"  cascade: {count} {name} deleted by on_delete rules")
        if plan is not None:
            for label in plan.tables().keys() - result.tables.keys():
                self.write_entries(plan.changes(label), table=True)
        self.stdout.write(f"  Total changes: {result.total_changes} records")

    def write_entries(self, entries: Iterable[dict], table: bool = False) -> None:
        """``table``: the entries of a table the import does not load, named on each."""
        for entry in entries:
            for line in entry_lines(entry, table=table):
                self.stdout.write(line)

    def report_json(self, result: ImportResult, run: ImportRun, plan: Plan | None) -> None:
        """The result with each table's changes, streamed from the plan entry by entry."""
        head = result.as_dict() | {"job": run.label}
        tables = head.pop("tables")
        out = self.stdout
        out.write(orjson.dumps(head).decode()[:-1] + ',"tables":[', ending="")
        for n, table in enumerate(tables):
            out.write(
                ("," if n else "") + orjson.dumps(table).decode()[:-1] + ',"changes":[', ending=""
            )
            entries = plan.changes(table["table"]) if plan is not None else ()
            for i, entry in enumerate(entries):
                out.write(("," if i else "") + dumps(entry), ending="")
            out.write("]}", ending="")
        out.write("]}")
