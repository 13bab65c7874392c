import orjson
from django.core.management.base import CommandError

from sync.archive import ArchiveError, read_index
from sync.errors import SyncError
from sync.management.base import SyncCommand
from sync.management.database import usable_database
from sync.models import BackupRecord
from sync.reconcile import Reconciliation, fix, reconcile
from sync.storage import locate_archive


class Command(SyncCommand):
    interrupted = (
        "Interrupted; with --fix, what was recorded or marked before stays: run it again to finish."
    )

    help = (
        "Show what a backup archive holds (tables, record counts, sizes, format version, "
        "creation time, source database) by reading its index only. Without ARCHIVE, list the "
        "backups recorded in the database, marking stale ones (left 'running' by a process "
        "that is gone)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "archive",
            nargs="?",
            help="The archive to inspect: a local path, or a name in the archive storage "
            "(an existing local path wins).",
        )
        parser.add_argument("--json", action="store_true", help="Print the index as JSON.")
        parser.add_argument("--database", default="default", help="Alias for listing backups.")
        parser.add_argument(
            "--reconcile",
            action="store_true",
            help="List archives in the storage that no backup record names, and succeeded "
            "records whose archive is gone.",
        )
        parser.add_argument(
            "--fix",
            action="store_true",
            help="With --reconcile: record the unrecorded archives (from their index) and mark "
            "the records whose archive is gone as missing. Never deletes anything.",
        )

    def handle(self, *args, archive: str | None, **options):
        if options["fix"] and not options["reconcile"]:
            raise CommandError("--fix goes with --reconcile.")
        if options["reconcile"]:
            if archive is not None:
                raise CommandError("--reconcile looks at the whole storage: give no archive.")
            return self.reconcile(options["database"], options["fix"], options["json"])
        if archive is None:
            return self.list_backups(options["database"], options["json"])
        try:
            index = read_index(locate_archive(archive))
        except ArchiveError as exc:
            raise CommandError(f"{archive}: {exc}") from exc
        if options["json"]:
            self.stdout.write(orjson.dumps(index.data, option=orjson.OPT_INDENT_2).decode())
            return
        data = index.data
        source = data.get("source", {})
        self.stdout.write(f"Archive:   {archive}")
        self.stdout.write(f"Format:    {data['format']} v{data['format_version']}")
        self.stdout.write(f"Backup id: {data.get('backup_id')} ({data.get('kind')})")
        self.stdout.write(f"Created:   {data.get('created_at')}")
        self.stdout.write(
            f"Source:    {source.get('vendor')} {source.get('version')} "
            f"(alias {source.get('alias')})"
        )
        width = max([len(t.label) for t in index.tables] + [5])
        self.stdout.write(f"\n{'table':<{width}}  {'records':>10}  {'bytes':>12}  key")
        for t in index.tables:
            key = "+".join(t.key_fields)
            self.stdout.write(f"{t.label:<{width}}  {t.count:>10}  {t.size:>12}  {key}")
        total_size = sum(t.size for t in index.tables)
        self.stdout.write(
            f"{'total':<{width}}  {data.get('total_records', 0):>10}  {total_size:>12}"
        )

    def list_backups(self, using: str, as_json: bool) -> None:
        backups = list(
            BackupRecord.objects.using(usable_database(using)).order_by("-created_at")[:50]
        )
        rows = [
            {
                "file_name": b.file_name,
                "status": "stale" if b.is_stale else "missing" if b.missing_since else b.status,
                "created_at": b.created_at.isoformat(),
                "records": b.total_records,
                "size": b.size,
                "error": b.error,
            }
            for b in backups
        ]
        if as_json:
            self.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
            return
        if not rows:
            self.stdout.write("No backups recorded.")
        for row in rows:
            note = NOTES.get(row["status"], "")
            self.stdout.write(
                f"{row['created_at']}  {row['status']:<9}  {row['records']:>9} rec  "
                f"{row['file_name']}{note}"
            )

    def reconcile(self, using: str, fixing: bool, as_json: bool) -> None:
        using = usable_database(using)
        try:
            result = reconcile(using)
            if fixing:
                fix(result, using)
        except SyncError as exc:
            raise CommandError(str(exc)) from exc
        if as_json:
            self.stdout.write(orjson.dumps(reconciliation_data(result)).decode())
            return
        if result.agrees:
            self.stdout.write(self.style.SUCCESS("The storage and the records agree."))
            return
        for name in result.unrecorded:
            self.stdout.write(f"unrecorded  {name}  (in the storage, no record names it)")
        for record in result.missing:
            self.stdout.write(f"missing     {record.storage_path}  ({record.label}: gone)")
        if not fixing:
            self.stdout.write("Run with --fix to record and mark them (nothing is deleted).")
            return
        for record in result.recorded:
            self.stdout.write(f"Recorded {record.file_name} as {record.label}.")
        for problem in result.unreadable:
            self.stdout.write(f"Not recorded: {problem.name}: {problem.error}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Recorded {len(result.recorded)} archive(s); marked {len(result.marked)} "
                f"record(s) missing."
            )
        )


NOTES = {
    "stale": " (left running by a process that is gone)",
    "missing": " (its archive is gone from the storage)",
}


def reconciliation_data(result: Reconciliation) -> dict:
    return {
        "unrecorded": result.unrecorded,
        "missing": [{"job": r.label, "archive": r.storage_path} for r in result.missing],
        "recorded": [{"job": r.label, "archive": r.storage_path} for r in result.recorded],
        "unreadable": [{"archive": u.name, "error": u.error} for u in result.unreadable],
        "marked": [r.label for r in result.marked],
    }
