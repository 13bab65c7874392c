"""The tools the other tests stand on must be able to fail."""

import pytest

from crearis.content.models import Tag
from tests.awkward.models import Article
from tests.cli import assert_refused, cli
from tests.fingerprint import fingerprint

pytestmark = pytest.mark.django_db


def test_fingerprint_sees_a_changed_value_and_rows_a_default_manager_hides():
    Article.objects.create(slug="seen")
    Article.objects.create(slug="hidden", hidden=True)
    before = fingerprint()
    assert before["awkward_article"][0] == 2
    Article._base_manager.filter(slug="hidden").update(title="edited")
    assert fingerprint() != before


def test_assert_refused_fails_when_the_command_succeeds(tmp_path):
    Tag.objects.create(name="kept")
    with pytest.raises(AssertionError, match="expected a refusal"):
        assert_refused(command="syncexport", output=str(tmp_path), quiet=True, expected="")


def test_cli_reports_a_command_error_as_status_and_message(tmp_path):
    outcome = cli("syncimport", str(tmp_path / "missing.backup.tar.gz"), no_input=True)
    assert outcome.status == 1
    assert "missing.backup.tar.gz" in outcome.error
