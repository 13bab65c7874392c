from django.core.management.base import CommandError

from sync.management.base import SyncCommand
from sync.management.prompts import confirmed
from sync.schedules import ScheduleError, ScheduleOutcome, install_schedules, schedule_states

SAYS = {
    "created": "created",
    "unchanged": "as defined, left",
    "kept": "edited, kept as it is",
    "restored": "restored to the default",
}


class Command(SyncCommand):
    help = (
        "Install the default beat schedules (a nightly export, a weekly full export, a daily "
        "rotation) as periodic tasks people edit in the admin. Creates the missing ones and "
        "never changes one a person edited or disabled; --reset puts the defaults back (all, "
        "or those named); --list shows the schedules of sync tasks and how each differs from "
        "its default. Safe to run on every start. See docs/celery.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar="NAME", help="Only these defaults.")
        parser.add_argument(
            "--reset", action="store_true", help="Overwrite edited defaults with the default."
        )
        parser.add_argument("--list", action="store_true", help="Show the schedules; change none.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be done; change nothing."
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Do not ask before --reset overwrites edited schedules.",
        )

    def handle(self, *args, **options):
        if options["list"]:
            return self.show_list()
        names = tuple(options["names"])
        reset, dry_run = options["reset"], options["dry_run"]
        try:
            if reset and options["interactive"] and not dry_run:
                self.confirm_reset(names)
            outcomes = install_schedules(names, reset=reset, dry_run=dry_run)
        except ScheduleError as exc:
            raise CommandError(str(exc)) from exc
        self.report(outcomes, dry_run, options["verbosity"])

    def confirm_reset(self, names: tuple[str, ...]) -> None:
        edited = [o for o in install_schedules(names, reset=True, dry_run=True) if o.edited]
        if not edited:
            return
        listed = ", ".join(repr(outcome.name) for outcome in edited)
        if not confirmed(self.stdout, f"This overwrites what people changed in {listed}."):
            raise CommandError("Reset cancelled; no schedule was changed.")

    def report(self, outcomes: list[ScheduleOutcome], dry_run: bool, verbosity: int) -> None:
        for outcome in outcomes:
            if verbosity < 2 and outcome.action == "unchanged":
                continue
            says = SAYS[outcome.action] + (" (dry run)" if dry_run else "")
            changed = f" — changed: {', '.join(outcome.edited)}" if outcome.edited else ""
            if verbosity >= 1:
                self.stdout.write(f"{outcome.name}: {says}{changed}")
        written = sum(outcome.action in ("created", "restored") for outcome in outcomes)
        if verbosity >= 1:
            summary = f"{written} schedule(s) {'to write' if dry_run else 'written'}, "
            summary += f"{len(outcomes) - written} left as they are."
            self.stdout.write(self.style.SUCCESS(summary))

    def show_list(self) -> None:
        for state in schedule_states():
            enabled = "" if state.enabled or state.state == "missing" else ", disabled"
            changed = f": {', '.join(state.edited)}" if state.edited else ""
            self.stdout.write(f"{state.name}  [{state.state}{changed}{enabled}]")
            if state.state == "missing":
                self.stdout.write("    not installed: run syncschedule")
                continue
            last = f"{state.last_run_at:%Y-%m-%d %H:%M:%S %Z}" if state.last_run_at else "never"
            self.stdout.write(f"    {state.task} {state.kwargs}")
            self.stdout.write(f"    {state.when}; last run: {last}")
