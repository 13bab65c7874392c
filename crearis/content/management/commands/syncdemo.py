import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from crearis.content.demo import DemoRefused, build_demo, demo_total


class Command(BaseCommand):
    help = (
        "Fill the database with a realistic, deterministic demo data set (the same --seed gives "
        "the same data). Needs the system data (`syncseed`). Refuses a database that already "
        "holds content unless --force, which replaces that content."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--events", type=int, default=200, help="Number of events (default 200)."
        )
        parser.add_argument("--seed", type=int, default=1, help="Random seed (default 1).")
        parser.add_argument("--force", action="store_true", help="Replace existing content.")
        parser.add_argument("--database", default="default", help="Database alias to fill.")

    def handle(self, *args, events: int, seed: int, force: bool, database: str, **options):
        if events < 1:
            raise CommandError("--events must be at least 1.")
        quiet = options["verbosity"] == 0 or not sys.stderr.isatty()
        with tqdm(total=demo_total(events), unit="rows", disable=quiet, desc="demo") as bar:
            try:
                counts = build_demo(events, seed, database, force, progress=bar.update)
            except DemoRefused as exc:
                raise CommandError(str(exc)) from exc
        if options["verbosity"] >= 2:
            for label, count in counts.items():
                self.stdout.write(f"{label}: {count}")
        self.stdout.write(
            self.style.SUCCESS(f"Demo data written: {sum(counts.values())} rows (seed {seed}).")
        )
