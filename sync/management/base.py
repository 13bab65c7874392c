"""What every sync command shares: an interrupt ends it in one line, never a traceback."""

from django.core.management.base import BaseCommand, CommandError

from sync.jobs.lifecycle import terminable


class SyncCommand(BaseCommand):
    """A sync command. Ctrl-C (KeyboardInterrupt) or SIGTERM ends it with ``interrupted``,
    one line saying what was left, as a CommandError (exit status 1). Commands that run a
    job say more in their own ``handle`` (the job records how it ended)."""

    interrupted = "Interrupted."

    def execute(self, *args, **options):
        try:
            with terminable():
                return super().execute(*args, **options)
        except KeyboardInterrupt as exc:
            raise CommandError(self.interrupted) from exc
