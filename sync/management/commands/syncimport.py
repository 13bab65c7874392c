import getpass

import orjson
from django.core.management.base import BaseCommand, CommandError

from sync.importer import MODES, ImportFailed, ImportResult
from sync.jobs.imports import run_import
from sync.jobs.reporter import JobCancelled, JobReporter
from sync.management.database import usable_database
from sync.management.progress import ProgressBar


class Command(BaseCommand):
    help = (
        "Import a backup archive, matching records by sync key (xmlid / natural key / primary "
        "key), never by database id. Modes: replace (default; the tables end up exactly as in "
        "the archive), update (insert new, overwrite where the archive's updated_at is newer), "
        "append (insert only new keys). The archive is verified before the first write and the "
        "whole import is one transaction. --dry-run shows what would change and writes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("archive", help="Path of the archive to import.")
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

    def handle(self, *args, **options):
        usable_database(options["database"])
        quiet = options["quiet"] or options["verbosity"] == 0
        details = options["show_changes"] or options["json"]
        confirm = not (options["dry_run"] or options["no_input"] or options["json"])
        if confirm:
            preview = self.run(options, dry_run=True, details=details, quiet=quiet)
            self.report(preview, options)
            if preview.total_changes == 0:
                self.stdout.write("Nothing to change.")
                return
            if not self.confirmed():
                raise CommandError("Import cancelled; nothing was changed.")
        result = self.run(options, dry_run=options["dry_run"], details=details, quiet=quiet)
        if (not confirm and not quiet) or options["json"]:
            self.report(result, options)
        if not options["dry_run"] and not quiet and not options["json"]:
            self.stdout.write(
                self.style.SUCCESS(f"Imported: {result.total_changes} records changed.")
            )

    def run(self, options, dry_run: bool, details: bool, quiet: bool) -> ImportResult:
        title = "dry run" if dry_run else "import"
        with ProgressBar(title, enabled=not quiet and not options["json"]) as bar:
            try:
                result, _ = run_import(
                    options["archive"],
                    mode=options["mode"],
                    using=options["database"],
                    dry_run=dry_run,
                    tables=options["tables"],
                    collect_changes=details,
                    started_by=f"syncimport ({getpass.getuser()})",
                    reporter=JobReporter(bar),
                    drop_unresolved=options["drop_unresolved"],
                )
            except (ImportFailed, JobCancelled) as exc:
                raise CommandError(str(exc)) from exc
            except KeyboardInterrupt as exc:  # the import's transaction was rolled back
                what = "Dry run" if dry_run else "Import"
                raise CommandError(f"{what} interrupted; nothing was changed.") from exc
        return result

    def confirmed(self) -> bool:
        try:
            answer = input("Type 'yes' to apply these changes: ")
        except (EOFError, KeyboardInterrupt):  # no answer is no
            self.stdout.write("")  # end the prompt's line
            return False
        return answer.strip() == "yes"

    def report(self, result: ImportResult, options) -> None:
        if options["json"]:
            self.stdout.write(orjson.dumps(result.as_dict()).decode())
            return
        title = "Changes preview" if result.dry_run else "Changes"
        self.stdout.write(f"{title} ({result.mode} mode):")
        for diff in result.tables.values():
            line = f"  {diff.name}: {diff.new} new, {diff.updated} updated, {diff.deleted} deleted"
            extra = [f"{diff.unchanged} unchanged"] + (
                [f"{diff.skipped} skipped"] if diff.skipped else []
            )
            if diff.dropped:
                extra.append(f"{diff.dropped} dropped: unresolved generic references")
            self.stdout.write(f"{line} ({', '.join(extra)})")
            for note in diff.notes:
                self.stdout.write(f"    note: {note}")
            if options["show_changes"]:
                for change in diff.changes:
                    reason = f": {change.reason}" if change.reason else ""
                    self.stdout.write(f"    {change.action} {change.key!r}{reason}")
                    for name, (old, new) in change.fields.items():
                        self.stdout.write(f"      {name}: {old!r} → {new!r}")
        for name, count in result.cascaded.items():
            self.stdout.write(f"  cascade: {count} {name} deleted by on_delete rules")
        self.stdout.write(f"  Total changes: {result.total_changes} records")
