import orjson
from django.core.management.base import BaseCommand, CommandError

from sync.archive import ArchiveError, read_index
from sync.management.database import usable_database
from sync.models import BackupRecord


class Command(BaseCommand):
    help = (
        "Show what a backup archive holds (tables, record counts, sizes, format version, "
        "creation time, source database) by reading its index only. Without ARCHIVE, list the "
        "backups recorded in the database, marking stale ones (left 'running' by a process "
        "that is gone)."
    )

    def add_arguments(self, parser):
        parser.add_argument("archive", nargs="?", help="Path of the archive to inspect.")
        parser.add_argument("--json", action="store_true", help="Print the index as JSON.")
        parser.add_argument("--database", default="default", help="Alias for listing backups.")

    def handle(self, *args, archive: str | None, **options):
        if archive is None:
            return self.list_backups(options["database"], options["json"])
        try:
            index = read_index(archive)
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
                "status": "stale" if b.is_stale else b.status,
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
            note = " (left running by a process that is gone)" if row["status"] == "stale" else ""
            self.stdout.write(
                f"{row['created_at']}  {row['status']:<9}  {row['records']:>9} rec  "
                f"{row['file_name']}{note}"
            )
