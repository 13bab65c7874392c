"""Exports of selected records (sync.jobs.exports.start_selected_export): the rows chosen,
and with references the rows they point at, directly or not — kept on the job's row, so a
worker executing the job from its id alone writes the same archive."""

from pathlib import Path

import pytest

from crearis.content.models import Event, Tag
from sync.jobs.exports import execute_export, referenced_rows, start_selected_export
from sync.models import Job
from tests.archive_tools import dangling_references, read_records

pytestmark = pytest.mark.django_db


def test_only_the_selected_rows_are_written(demo, tmp_path):
    tags = list(Tag.objects.order_by("pk")[:2])
    backup = start_selected_export(Tag, [t.pk for t in tags], output_dir=tmp_path)
    assert backup.status == Job.Status.QUEUED
    assert backup.tables == ["content.Tag"]
    assert backup.kind == "selected"
    result = execute_export(backup.pk)  # from the id alone, as a worker does
    _, records = read_records(result.path)
    assert sorted(r["name"] for r in records["content.Tag"]) == sorted(t.name for t in tags)
    assert result.backup.total_records == 2


def test_with_references_the_rows_pointed_at_come_along(demo, tmp_path):
    event = Event.objects.exclude(location=None).exclude(tags=None).order_by("pk").first()
    backup = start_selected_export(Event, [event.pk], with_references=True, output_dir=tmp_path)
    result = execute_export(backup.pk)
    _, records = read_records(result.path)
    assert [r["xmlid"] for r in records["content.Event"]] == [event.xmlid]
    assert {r["name"] for r in records["content.Tag"]} == {t.name for t in event.tags.all()}
    assert [r["xmlid"] for r in records["content.Location"]] == [event.location.xmlid]
    assert dangling_references(Path(result.path)) == []


def test_references_are_followed_transitively_and_only_once(demo):
    event = Event.objects.exclude(location=None).order_by("pk").first()
    found = referenced_rows({Event: {event.pk}})
    assert found[Event] == {event.pk}
    location = event.location
    assert location.pk in found[type(location)]
    for model, keys in found.items():  # every row named exists, none twice
        assert model._base_manager.filter(pk__in=keys).count() == len(keys)
