import sys
import time

import orjson
from django.core.management.base import CommandError

from sync.jobs.lifecycle import NAME_HELP, JobError, JobState, find_job, recent_jobs, request_cancel
from sync.management.base import SyncCommand
from sync.management.database import usable_database
from sync.models import Job

ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING)


class Command(SyncCommand):
    help = (
        "List recent export and import jobs with their status and progress (phase, table, "
        "records done of total), who started them and when; a running job whose process is "
        "gone is shown as stale. --watch refreshes the list about once a second until no job "
        "is queued or running; --watch ID follows one job to its end (exit status 0 if it "
        "succeeded, 1 if it failed or was cancelled); --cancel ID asks a job to stop. " + NAME_HELP
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--watch",
            nargs="?",
            const="",
            metavar="ID",
            help="Refresh the list; with ID, follow that job until it ends.",
        )
        parser.add_argument("--cancel", metavar="ID", help="Ask job ID to stop.")
        parser.add_argument("--limit", type=int, default=20, help="Jobs to list (20).")
        parser.add_argument("--json", action="store_true", help="Print the list as JSON.")
        parser.add_argument("--database", default="default", help="Database alias of the jobs.")
        parser.add_argument(
            "--interval", type=float, default=1.0, help="Seconds between refreshes (1)."
        )

    def handle(self, *args, **options):
        using = usable_database(options["database"])
        try:
            if options["cancel"]:
                return self.cancel(options["cancel"], using)
            if options["watch"]:
                return self.follow(find_job(options["watch"], using), options["interval"])
        except JobError as exc:
            raise CommandError(str(exc)) from exc
        if options["watch"] == "":
            return self.watch_list(using, options["limit"], options["interval"])
        self.show_list(using, options["limit"], options["json"])

    # -- the list ------------------------------------------------------------------------------
    def show_list(self, using: str, limit: int, as_json: bool) -> list[JobState]:
        states = [JobState.of(job) for job in recent_jobs(using, limit)]
        if as_json:
            self.stdout.write(orjson.dumps([s.as_dict() for s in states]).decode())
            return states
        if not states:
            self.stdout.write("No jobs recorded.")
            return states
        rows = [("job", "status", "progress", "who", "started")] + [
            (s.name, s.status, s.progress_text, s.who, f"{s.started_at or s.created_at:%F %T}")
            for s in states
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row, state in zip(rows, [None, *states], strict=True):
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
            if state is not None and state.error and state.status != Job.Status.SUCCEEDED:
                self.stdout.write(f"    {state.error}")
        return states

    def watch_list(self, using: str, limit: int, interval: float) -> None:
        """Refresh until no listed job is queued or running (Ctrl-C stops watching only)."""
        clear = sys.stdout.isatty() and self.stdout._out is sys.stdout
        try:
            while True:
                if clear:
                    self.stdout.write("\x1b[H\x1b[2J", ending="")
                states = self.show_list(using, limit, as_json=False)
                if not any(s.status in ACTIVE for s in states):
                    return
                self.stdout.write("")
                self.stdout.flush()
                time.sleep(interval)
        except KeyboardInterrupt:
            return

    # -- one job -------------------------------------------------------------------------------
    def follow(self, job: Job, interval: float) -> None:
        """Print the job's progress as it changes until it ends; fail unless it succeeded.
        Ctrl-C stops the watching, not the job: it says so in one line (exit status 1)."""
        try:
            self.follow_to_the_end(job, interval)
        except KeyboardInterrupt as exc:
            raise CommandError(
                f"Stopped watching {job.label}, which goes on; stop it with: syncjobs --cancel "
                f"{job.label}"
            ) from exc

    def follow_to_the_end(self, job: Job, interval: float) -> None:
        shown = None
        while True:
            job.refresh_from_db()
            state = JobState.of(job)
            line = f"{state.name}  {state.status}  {state.progress_text}".rstrip()
            if line != shown:
                self.stdout.write(line)
                self.stdout.flush()
                shown = line
            if state.status == Job.Status.SUCCEEDED:
                self.stdout.write(self.style.SUCCESS(f"{state.name} succeeded."))
                return
            if state.status == "stale":
                raise CommandError(
                    f"{state.name} is stale: its process stopped sending heartbeats (it is "
                    "marked failed when the next job starts)."
                )
            if state.status not in ACTIVE:
                raise CommandError(f"{state.name} {state.status}: {state.error}")
            time.sleep(interval)

    def cancel(self, name: str, using: str) -> None:
        job = request_cancel(find_job(name, using))
        if job.is_stale:
            self.stdout.write(
                f"{job.label} is stale: its process is gone, nothing is left to stop (it is "
                "marked failed when the next job starts)."
            )
            return
        if job.status == Job.Status.CANCELLED:
            self.stdout.write(f"{job.label} was {Job.Status.QUEUED}: cancelled.")
            return
        self.stdout.write(
            f"Cancel requested: {job.label} stops at its next progress check (within a few "
            "seconds); follow it with: syncjobs --watch " + job.label
        )
