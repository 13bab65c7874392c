import orjson
import pytest

from crearis.content.models import Status, SystemConfig, Tag
from sync.seeding import SYSTEM_DATA_FILE
from tests.cli import cli
from tests.conftest import run_command
from tests.locks import lock_held_elsewhere

pytestmark = pytest.mark.django_db


def snapshot():
    return {
        model._meta.label: sorted(
            model.objects.values_list(*[f.attname for f in model._meta.concrete_fields])
        )
        for model in (Status, Tag, SystemConfig)
    }


def test_seed_loads_every_row_of_the_data_file():
    data = orjson.loads(SYSTEM_DATA_FILE.read_bytes())["tables"]
    run_command("syncseed")
    assert Status.objects.count() == len(data["content.Status"])
    assert Tag.objects.count() == len(data["content.Tag"])
    assert SystemConfig.objects.count() == len(data["content.SystemConfig"])
    assert set(Tag.objects.values_list("name", flat=True)) >= {"child", "adult", "teen", "location"}
    publish = Status.objects.get(name="publish", table="events")
    assert publish.value == 3
    assert set(publish.name_i18n) == {"de", "en", "cz"}
    assert Status.objects.get(name="trash", table="posts").value == 16


def test_second_seed_changes_nothing_and_says_so():
    run_command("syncseed")
    before = snapshot()
    out = run_command("syncseed")
    assert "nothing changed" in out
    assert snapshot() == before


def test_local_edit_survives_a_second_seed_unless_update():
    run_command("syncseed")
    Status.objects.filter(name="done", table="events").update(description="ours")
    run_command("syncseed")
    assert Status.objects.get(name="done", table="events").description == "ours"
    run_command("syncseed", update=True)
    assert Status.objects.get(name="done", table="events").description != "ours"


def test_deleted_system_row_comes_back():
    run_command("syncseed")
    Tag.objects.filter(name="teen").delete()
    out = run_command("syncseed")
    assert "1 created" in out
    assert Tag.objects.filter(name="teen").exists()


def test_seeding_is_refused_while_an_import_holds_the_lock(db):
    with lock_held_elsewhere():
        outcome = cli("syncseed")
    assert outcome.status == 1
    assert "Refused: another import is running" in outcome.error
    assert not Tag.objects.exists()
    assert cli("syncseed").status == 0
    assert Tag.objects.exists()
