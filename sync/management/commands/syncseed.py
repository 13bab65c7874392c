from django.core.management.base import BaseCommand

from sync.seeding import seed_system_data


class Command(BaseCommand):
    help = (
        "Load the platform's system data (statuses, tags, config keys) from the bundled data "
        "file. Idempotent: rows that exist are left alone unless --update is given."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--update", action="store_true", help="Overwrite system rows that were edited locally."
        )
        parser.add_argument("--database", default="default", help="Database alias to seed.")

    def handle(self, *args, update: bool, database: str, verbosity: int, **options):
        result = seed_system_data(update=update, using=database)
        if verbosity >= 2:
            for label in sorted({*result.created, *result.updated, *result.unchanged}):
                self.stdout.write(
                    f"{label}: {result.created[label]} created, {result.updated[label]} updated, "
                    f"{result.unchanged[label]} unchanged"
                )
        if not result.changed:
            self.stdout.write("System data is up to date: nothing changed.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"System data seeded: {sum(result.created.values())} created, "
                f"{sum(result.updated.values())} updated."
            )
        )
