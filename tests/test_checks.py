"""sync.checks: each sync setting with a bad value is a system check error with its own id."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks

from sync.conf import DEFAULTS


def errors(check_id: str) -> list[str]:
    return [e.msg for e in run_checks() if e.id == check_id]


def test_the_project_settings_pass_every_check():
    assert [e for e in run_checks() if e.id.startswith("sync.")] == []


@pytest.mark.parametrize("value", [0, -5, "100000", 1.5, None])
def test_a_key_map_limit_that_is_not_a_positive_int_is_refused(settings, value):
    settings.SYNC_KEY_MAP_LIMIT = value
    assert errors("sync.E003") == [
        f"SYNC_KEY_MAP_LIMIT must be a positive number of rows, not {value!r}."
    ]


@pytest.mark.parametrize("value", ["*.password", ["*.password", 3], None])
def test_sensitive_fields_that_are_not_a_list_of_strings_are_refused(settings, value):
    settings.SYNC_SENSITIVE_FIELDS = value
    assert errors("sync.E004") == [
        f'SYNC_SENSITIVE_FIELDS must be a list of patterns ("app_label.Model.field", fnmatch), '
        f"not {value!r}."
    ]


def test_default_apps_must_be_installed_app_labels(settings):
    settings.SYNC_DEFAULT_APPS = ["content", "nosuchapp"]
    assert errors("sync.E005") == [
        "SYNC_DEFAULT_APPS: 'nosuchapp' is not the label of an installed app."
    ]
    settings.SYNC_DEFAULT_APPS = "content"
    assert errors("sync.E005") == ["SYNC_DEFAULT_APPS must be a list of app labels, not 'content'."]


def test_backup_dir_must_be_a_path_to_a_directory(settings, tmp_path):
    settings.BACKUP_DIR = 42
    assert errors("sync.E006") == ["BACKUP_DIR must be a path, not 42."]
    (a_file := tmp_path / "file").write_text("")
    settings.BACKUP_DIR = str(a_file)
    assert errors("sync.E006") == [f"BACKUP_DIR {str(a_file)!r} is not a directory."]
    settings.BACKUP_DIR = tmp_path / "not-yet"  # made by the first export
    assert errors("sync.E006") == []


@pytest.mark.parametrize("value", [["content.Tag"], {"content.Tag": "xmlid"}, {"content.Tag": []}])
def test_keys_must_map_labels_to_field_lists(settings, value):
    settings.SYNC_KEYS = value
    assert errors("sync.E007") == [
        f"SYNC_KEYS must be a map of model labels to lists of field names, not {value!r}."
    ]


def test_task_time_limits_are_positive_seconds_the_soft_one_first(settings):
    settings.SYNC_TASK_SOFT_TIME_LIMIT = "60"
    assert errors("sync.E021") == [
        "SYNC_TASK_SOFT_TIME_LIMIT must be a positive number of seconds, not '60'."
    ]
    settings.SYNC_TASK_SOFT_TIME_LIMIT, settings.SYNC_TASK_TIME_LIMIT = 600, 600
    assert errors("sync.E021") == [
        "SYNC_TASK_SOFT_TIME_LIMIT (600 s) must be below SYNC_TASK_TIME_LIMIT (600 s): at the "
        "hard limit the worker process is killed, and the job cannot record its end."
    ]


def test_the_defaults_pass_every_check(settings):
    for name in DEFAULTS:
        if hasattr(settings, name):
            delattr(settings, name)
    assert [e for e in run_checks() if e.id.startswith("sync.")] == []


@pytest.mark.parametrize("value", [-1, "7", None, True])
def test_plan_keep_days_must_be_a_number_of_days(settings, value):
    settings.SYNC_PLAN_KEEP_DAYS = value
    assert errors("sync.E012") == [f"SYNC_PLAN_KEEP_DAYS must be a number of days, not {value!r}."]
    settings.SYNC_PLAN_KEEP_DAYS = 0.5
    assert errors("sync.E012") == []


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_the_same_stamp_check_is_true_or_false(settings, value):
    settings.SYNC_SAME_STAMP_CHECK = value
    assert errors("sync.E013") == [f"SYNC_SAME_STAMP_CHECK must be True or False, not {value!r}."]


@pytest.mark.django_db
@pytest.mark.parametrize("include_secrets", [False, True], ids=["without-secrets", "with-secrets"])
def test_a_sync_key_is_never_a_secret(settings, tmp_path, include_secrets):
    """A key names its record everywhere: the automatic choice passes over a secret; a key
    SYNC_KEYS names that is one is a check error, and exports of it are refused (before, an
    export without secrets wrote an archive without its keys, which no import could read)."""
    from sync.schema import sync_key_fields
    from tests.awkward.models import Seat
    from tests.cli import cli

    settings.SYNC_SENSITIVE_FIELDS = ["*.password", "awkward.Seat.code"]
    assert sync_key_fields(Seat) == ("number",)  # the next unique field
    assert errors("sync.E065") == []

    settings.SYNC_KEYS = {"awkward.Seat": ["code"]}
    assert errors("sync.E065") == [
        "SYNC_KEYS: the sync key of awkward.Seat includes 'code', which SYNC_SENSITIVE_FIELDS "
        "names; a key names its record in every archive, plan and message, so exports and "
        "imports of it are refused."
    ]
    secrets = ["--include-secrets"] if include_secrets else []
    outcome = cli("syncexport", "--tables", "awkward.Seat", "--output", str(tmp_path), *secrets)
    assert outcome.status == 1
    assert "awkward.Seat: its sync key field 'code' is in SYNC_SENSITIVE_FIELDS" in outcome.error
    assert list(tmp_path.iterdir()) == []
