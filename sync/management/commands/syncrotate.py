from django.core.management.base import CommandError
from django.utils import timezone

from sync.errors import SyncError
from sync.management.base import SyncCommand
from sync.management.database import usable_database
from sync.management.prompts import confirmed
from sync.rotation import Planned, Policy, RotationPlan, apply_rotation, plan_rotation


class Command(SyncCommand):
    interrupted = (
        "Rotation interrupted; the archives it deleted are marked deleted in their records "
        "(syncinspect --reconcile lists any it could not mark)."
    )

    help = (
        "Delete old backups' archives by a retention policy like restic's forget: --keep-last N "
        "newest, the newest of each of the last N days / ISO weeks / months that have backups, "
        "everything at most --max-age-days old; rules are ORed. The newest successful backup "
        "and every backup a kept one depends on stay; failed jobs' leftover archives go. "
        "Defaults: BACKUP_KEEP_COUNT, SYNC_KEEP_DAILY/WEEKLY/MONTHLY, BACKUP_MAX_AGE_DAYS. "
        "Records stay, marked deleted with when and why. See docs/rotation.md."
    )

    def add_arguments(self, parser):
        for rule, what in (
            ("last", "the N newest backups"),
            ("daily", "the newest backup of each of the last N days that have backups"),
            ("weekly", "the newest of each of the last N ISO weeks (Monday-Sunday)"),
            ("monthly", "the newest of each of the last N calendar months"),
        ):
            parser.add_argument(f"--keep-{rule}", type=int, metavar="N", help=f"Keep {what}.")
        parser.add_argument(
            "--max-age-days",
            type=int,
            metavar="D",
            help="Keep every backup at most D days old; older ones only if another rule does.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List each backup with keep or delete and the rule that decided; delete nothing.",
        )
        parser.add_argument("--no-input", action="store_true", help="Do not ask for confirmation.")
        parser.add_argument("--database", default="default", help="Database alias of the records.")

    def handle(self, *args, **options):
        using = usable_database(options["database"])
        try:
            policy = Policy.from_settings(
                keep_last=options["keep_last"],
                keep_daily=options["keep_daily"],
                keep_weekly=options["keep_weekly"],
                keep_monthly=options["keep_monthly"],
                max_age_days=options["max_age_days"],
            )
            plan = plan_rotation(policy, using)
        except SyncError as exc:
            raise CommandError(str(exc)) from exc
        verbosity = options["verbosity"]
        if options["dry_run"] or verbosity >= 2:
            self.list_plan(plan)
        deleting = len(plan.to_delete)
        if options["dry_run"]:
            self.stdout.write(f"Dry run: {deleting} would be deleted, {len(plan.kept)} kept.")
            return
        if not deleting:
            if verbosity:
                self.stdout.write(f"Nothing to delete ({policy}).")
            return
        if not options["no_input"]:
            if verbosity < 2:
                self.list_plan(plan, only_deleted=True)
            if not confirmed(self.stdout, f"{deleting} archive(s) will be deleted."):
                raise CommandError("Rotation cancelled; nothing was deleted.")
        try:
            result = apply_rotation(plan)
        except SyncError as exc:
            raise CommandError(str(exc)) from exc
        if verbosity:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Deleted {len(result.deleted)} archive(s), kept {len(plan.kept)} ({policy})."
                )
            )

    def list_plan(self, plan: RotationPlan, only_deleted: bool = False) -> None:
        self.stdout.write(f"Rotation of {plan.using} ({plan.policy}):")
        for entry in plan.to_delete if only_deleted else plan.entries:
            self.stdout.write(self.line(entry))

    def line(self, entry: Planned) -> str:
        decision = entry.decision
        when = timezone.localtime(decision.backup.time).strftime("%Y-%m-%d %H:%M %Z")
        action = decision.action.ljust(6)
        styled = self.style.WARNING(action) if not decision.keep else action
        return f"  {styled} {entry.record.label:<12} {when}  {entry.name}  ({decision.reason})"
