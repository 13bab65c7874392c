"""A site that keeps writing, for tests that export or import meanwhile. Run as a process of
its own against the database the environment names (``DATABASE_URL``):

``python -m tests.busy_site write PROGRESS`` commits transactions until SIGTERM, each adding
rows that refer to each other (a location, an event there with a new tag, an instructor and
participants), moving rows of the previous transaction to them and deleting older ones; after
each commit it appends one byte to the file PROGRESS.

``python -m tests.busy_site export PROGRESS OUTPUT`` waits for the writer's first commits,
exports the content tables into the folder OUTPUT and prints, as JSON, the archive's path and
how many of the writer's commits fell between the export's first and last read.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

KEEP = 20  # transactions whose rows live on before they are deleted


def commits(progress: Path) -> int:
    return progress.stat().st_size if progress.exists() else 0


def write(progress: Path) -> int:
    from django.db import transaction

    from crearis.content.models import Instructor, Project, Status

    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    project = Project.objects.order_by("pk").first()
    status = Status.objects.order_by("pk").first()
    instructors = list(Instructor.objects.order_by("pk").values_list("pk", flat=True)[:50])
    with open(progress, "ab", buffering=0) as log:
        number = 0
        while not stopping:
            number += 1
            with transaction.atomic():
                write_one(number, project, status, instructors[number % len(instructors)])
            log.write(b".")
    return 0


def write_one(number: int, project, status, instructor: int) -> None:
    """One transaction's rows: new ones referring to each other, older ones moved to them, and
    the rows of transaction ``number - KEEP`` deleted (with what cascades from them)."""
    from crearis.content.models import Event, EventInstructor, Location, Participant, Tag

    now = datetime.now(UTC)
    location = Location.objects.create(
        xmlid=f"busy.location__{number}", project=project, status=status, name=f"Busy {number}"
    )
    event = Event.objects.create(
        xmlid=f"busy.event__{number}",
        project=project,
        status=status,
        location=location,
        name=f"Busy event {number}",
    )
    event.tags.add(Tag.objects.create(name=f"busy-{number}"))
    EventInstructor.objects.create(event=event, instructor_id=instructor, added_at=now)
    Participant.objects.bulk_create(
        Participant(xmlid=f"busy.participant__{number}_{i}", event=event, status=status, name="P")
        for i in range(3)
    )
    previous = f"busy.event__{number - 1}"
    Participant.objects.filter(xmlid=f"busy.participant__{number - 1}_0").update(event=event)
    Event.objects.filter(xmlid=previous).update(location=location)
    Event.objects.filter(xmlid=f"busy.event__{number - KEEP}").delete()
    Location.objects.filter(xmlid=f"busy.location__{number - KEEP}").delete()
    Tag.objects.filter(name=f"busy-{number - KEEP}").delete()


def export_meanwhile(progress: Path, output: Path) -> int:
    from sync.jobs.exports import export
    from tests.job_tools import reporter_calling

    deadline = time.monotonic() + 60
    while commits(progress) < 3:
        if time.monotonic() > deadline:
            print("the writer did not start", file=sys.stderr)
            return 1
        time.sleep(0.05)
    seen: dict[str, int] = {}

    def first_read(total: int) -> None:
        seen["first"] = commits(progress)

    def read(count: int) -> None:
        seen["last"] = commits(progress)

    result = export(output_dir=output, reporter=reporter_calling(read, on_total=first_read))
    overlap = seen["last"] - seen["first"]
    print(json.dumps({"path": str(result.path), "overlap": overlap}))
    return 0


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crearis.settings")
    import django

    django.setup()
    if argv[0] == "write":
        return write(Path(argv[1]))
    return export_meanwhile(Path(argv[1]), Path(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
