import getpass
from pathlib import Path

from django.core.management.base import CommandError
from django.db import DatabaseError

from sync.archive import COMPRESSIONS
from sync.errors import SyncError
from sync.jobs.exports import execute_export, start_export
from sync.jobs.reporter import JobCancelled, JobReporter
from sync.management.background import hand_over, require_worker
from sync.management.base import SyncCommand
from sync.management.database import usable_database
from sync.management.progress import ProgressBar


class Command(SyncCommand):
    help = (
        "Export tables into a database-neutral backup archive (a compressed tar of JSON Lines, "
        "records keyed by sync keys, never by database ids) in the archive storage "
        "(STORAGES['sync'], default BACKUP_DIR) or a local directory (--output); prints its "
        "path, or its name in a remote storage. "
        "By default every model of the content app is exported."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--tables",
            nargs="+",
            metavar="T",
            help="Tables to export: model label (content.Event), model name (event, events), "
            "database table (content_event) or app label (content). Any installed model works.",
        )
        parser.add_argument("--exclude", nargs="+", metavar="T", help="Tables to leave out.")
        parser.add_argument(
            "--with-dependencies",
            action="store_true",
            help="Add every table the chosen ones reference, so the archive loads into an "
            "empty database.",
        )
        parser.add_argument("--compression", choices=COMPRESSIONS, default="gz")
        parser.add_argument(
            "--level", type=int, help="Compression level (gz/bz2/xz 0-9, zst 1-22)."
        )
        parser.add_argument(
            "--output",
            metavar="DIR",
            help="A local directory for the archive, instead of the archive storage "
            "(STORAGES['sync'], default BACKUP_DIR).",
        )
        parser.add_argument("--database", default="default", help="Database alias to read.")
        parser.add_argument(
            "--include-secrets",
            action="store_true",
            help="Also write password hashes and other sensitive fields (SYNC_SENSITIVE_FIELDS).",
        )
        parser.add_argument(
            "--quiet", action="store_true", help="Print only the archive's path; no progress."
        )
        parser.add_argument(
            "--async",
            action="store_true",
            dest="in_background",
            help="Hand the export to a Celery worker, print the job's name (export-12) and "
            "return at once; follow it with syncjobs --watch. Needs CELERY_BROKER_URL.",
        )

    def handle(self, *args, **options):
        usable_database(options["database"])
        quiet = options["quiet"] or options["verbosity"] == 0
        using = options["database"]
        background = options["in_background"]
        output = options["output"]
        if background:
            require_worker()
            output = output and Path(output).resolve()  # the worker has another cwd
        try:
            backup = start_export(
                tables=options["tables"],
                exclude=options["exclude"],
                with_dependencies=options["with_dependencies"],
                compression=options["compression"],
                level=options["level"],
                output_dir=output,
                using=using,
                include_secrets=options["include_secrets"],
                started_by=f"syncexport ({getpass.getuser()})",
            )
            if background:
                return hand_over(self, backup, quiet)
            with ProgressBar("export", enabled=not quiet) as bar:
                result = execute_export(backup.pk, using, JobReporter(bar))
        except JobCancelled as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the job recorded it
            raise CommandError("Export interrupted; no archive was written.") from exc
        except (SyncError, OSError) as exc:
            raise CommandError(f"Export failed: {exc}") from exc
        except DatabaseError as exc:
            raise CommandError(f"Export failed reading the {using!r} database: {exc}") from exc
        self.stdout.write(result.location)
        for label, nulled in result.nulled.items():  # even when quiet: values changed
            self.stderr.write(
                f"{label}: {nulled.count} generic reference(s) named no row and were written "
                f"as null, e.g. {nulled.examples[0]}."
            )
        if quiet:
            return
        for label, count in result.counts.items():
            self.stdout.write(f"  {label}: {count} records")
        self.stdout.write(
            self.style.SUCCESS(
                f"Exported {result.total} records from {len(result.counts)} tables "
                f"({result.backup.size} bytes, {result.backup.compression})."
            )
        )
