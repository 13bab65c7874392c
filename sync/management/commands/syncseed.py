from django.core.management.base import CommandError

from sync.importer import ImportFailed
from sync.management.base import SyncCommand
from sync.management.database import usable_database
from sync.seeding import seed_system_data


class Command(SyncCommand):
    help = (
        "Load the platform's system data (statuses, tags, config keys) from the bundled data "
        "file, as an import in append mode: idempotent, rows that exist are left alone. With "
        "--update (update mode), rows edited locally are overwritten with the bundled values."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--update", action="store_true", help="Overwrite system rows that were edited locally."
        )
        parser.add_argument("--database", default="default", help="Database alias to seed.")

    def handle(self, *args, update: bool, database: str, verbosity: int, **options):
        try:
            result = seed_system_data(update=update, using=usable_database(database))
        except ImportFailed as exc:
            raise CommandError(f"Seeding failed: {exc}") from exc
        if verbosity >= 2:
            for diff in result.tables.values():
                self.stdout.write(
                    f"{diff.label}: {diff.new} created, {diff.updated} updated, "
                    f"{diff.unchanged + diff.skipped} unchanged"
                )
        if result.total_changes == 0:
            self.stdout.write("System data is up to date: nothing changed.")
            return
        created = sum(d.new for d in result.tables.values())
        updated = sum(d.updated for d in result.tables.values())
        self.stdout.write(
            self.style.SUCCESS(f"System data seeded: {created} created, {updated} updated.")
        )
