from django.core.management.base import CommandError

from sync.archive import ArchiveError
from sync.management.base import SyncCommand
from sync.storage import locate_archive
from sync.verify import verify_archive


class Command(SyncCommand):
    interrupted = "Interrupted; the archive was not checked to its end."

    help = (
        "Check a backup archive completely without extracting it: format version and the "
        "index's fields, members (present, listed, regular files, safe names, size limit), "
        "sizes and sha256 checksums, and that every record line (at most SYNC_MAX_LINE_SIZE "
        "bytes) parses and matches the index: field types, sync keys where references belong, "
        "no name twice, JSON values not nested too deep. Reads at most what the index declares. "
        "Exits non-zero naming the first problem."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "archive",
            help="The archive to check: a local path, or a name in the archive storage (an "
            "existing local path wins). Read as a stream, never whole into memory.",
        )

    def handle(self, *args, archive: str, **options):
        try:
            report = verify_archive(locate_archive(archive))
        except ArchiveError as exc:
            raise CommandError(f"{archive}: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(report.summary(archive)))
