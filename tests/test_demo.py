import pytest
from django.core.management import CommandError

from crearis.content.demo import CONTENT_MODELS
from crearis.content.models import Event, EventInstructor, Participant, Project, User
from tests.conftest import run_command

pytestmark = pytest.mark.django_db


def content_fingerprint():
    """Every content row by its own values and its references' identities, ids left out."""
    rows = {}
    for model in CONTENT_MODELS:
        names = []
        for f in model._meta.concrete_fields:
            if f.primary_key or f.generated:
                continue
            if f.is_relation:
                target = f.related_model
                ident = "xmlid" if hasattr(target, "xmlid") else target._meta.get_field(
                    {"User": "sysmail", "Project": "domaincode", "Status": "name"}.get(
                        target.__name__, "pk")).name  # fmt: skip
                names.append(f"{f.name}__{ident}")
            else:
                names.append(f.name)
        rows[model._meta.label] = sorted(model.objects.values_list(*names), key=repr)
    return rows


def test_same_seed_gives_identical_data(seeded):
    run_command("syncdemo", events=15, seed=3)
    first = content_fingerprint()
    run_command("syncdemo", events=15, seed=3, force=True)
    assert content_fingerprint() == first
    run_command("syncdemo", events=15, seed=4, force=True)
    assert content_fingerprint() != first


def test_demo_is_realistic(demo):
    assert Event.objects.count() == 12
    assert Participant.objects.count() == 48
    assert Project.objects.filter(is_regio=True).exists()
    assert Project.objects.filter(regio__isnull=False).exists()
    assert User.objects.filter(instructor__isnull=False).exists()
    assert EventInstructor.objects.exists()
    assert Event.tags.through.objects.exists()
    names = " ".join(Participant.objects.values_list("name", flat=True))
    assert any(ord(c) > 127 for c in names)


def test_demo_refuses_a_database_with_content(demo):
    with pytest.raises(CommandError, match="already holds content"):
        run_command("syncdemo", events=3)


def test_demo_needs_system_data(db):
    with pytest.raises(CommandError, match="syncseed"):
        run_command("syncdemo", events=3)
