import pytest
from django.apps import apps
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import RunPython, RunSQL

from crearis.content import models

CONTENT = apps.get_app_config("content")


def test_migrations_hold_schema_only():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    content_migrations = [m for (app, _), m in loader.disk_migrations.items() if app == "content"]
    assert content_migrations
    for migration in content_migrations:
        for operation in migration.operations:
            assert not isinstance(operation, RunPython | RunSQL), migration.name


@pytest.mark.django_db
def test_migrate_leaves_every_content_table_empty():
    assert [m._meta.label for m in CONTENT.get_models() if m.objects.exists()] == []


@pytest.mark.django_db
def test_generated_column_follows_the_type():
    status = models.Status.objects.create(name="new", table="projects", value=0)
    owner = models.User.objects.create_user("owner@example.org")
    regio = models.Project.objects.create(
        domaincode="nord", name="Nord", type="regio", owner=owner, status=status
    )
    project = models.Project.objects.create(
        domaincode="theater", name="Theater", owner=owner, status=status, regio=regio
    )
    assert models.Project.objects.filter(is_regio=True).get() == regio
    project.type = "regio"
    project.save()
    project.refresh_from_db()
    assert project.is_regio is True
    assert models.Project.objects.filter(is_regio=True).count() == 2


@pytest.mark.parametrize(
    ("model", "field", "target"),
    [
        (models.User, "instructor", models.Instructor),
        (models.Project, "owner", models.User),
        (models.Project, "regio", models.Project),
        (models.Project, "status", models.Status),
        (models.Image, "project", models.Project),
        (models.Image, "owner", models.User),
        (models.Instructor, "image", models.Image),
        (models.Location, "project", models.Project),
        (models.Event, "project", models.Project),
        (models.Event, "location", models.Location),
        (models.Event, "public_instructor", models.Instructor),
        (models.Event, "image", models.Image),
        (models.Event, "tags", models.Tag),
        (models.Event, "instructors", models.Instructor),
        (models.EventInstructor, "event", models.Event),
        (models.EventInstructor, "instructor", models.Instructor),
        (models.Post, "event", models.Event),
        (models.Post, "project", models.Project),
        (models.Post, "tags", models.Tag),
        (models.Participant, "event", models.Event),
    ],
)
def test_relation_exists(model, field, target):
    assert model._meta.get_field(field).related_model is target


def test_event_instructors_go_through_a_model_with_added_at():
    through = models.Event._meta.get_field("instructors").remote_field.through
    assert through is models.EventInstructor
    assert models.EventInstructor._meta.get_field("added_at")


def test_every_model_has_timestamps_and_xmlid_entities_a_status():
    for model in CONTENT.get_models():
        names = {f.name for f in model._meta.get_fields()}
        assert {"created_at", "updated_at"} <= names, model
    for model in [models.Image, models.Instructor, models.Location, models.Participant,
                  models.Post, models.Event]:  # fmt: skip
        assert model._meta.get_field("xmlid").unique
        assert model._meta.get_field("status").related_model is models.Status


@pytest.mark.django_db
def test_long_unicode_text_is_stored_unchanged(seeded):
    status = models.Status.objects.get(name="new", table="events")
    owner = models.User.objects.create_user("ü@example.org")
    project = models.Project.objects.create(
        domaincode="p", name="P", owner=owner, status=models.Status.objects.first()
    )
    text = "Grüße aus Ústí 🎭 — 中文 ‮ " * 5000
    event = models.Event.objects.create(
        xmlid="p.event__x", project=project, name="x", description=text, status=status
    )
    event.refresh_from_db()
    assert event.description == text
