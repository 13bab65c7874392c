import pytest
from django.urls import reverse

from sync.jobs.exports import export

pytestmark = pytest.mark.django_db

CONTENT = ["status", "tag", "systemconfig", "user", "project", "image", "instructor",
           "location", "event", "post", "participant"]  # fmt: skip


@pytest.mark.parametrize("model", CONTENT)
def test_content_changelists_render(admin_client, demo, model):
    response = admin_client.get(reverse(f"admin:content_{model}_changelist"), {"q": "a"})
    assert response.status_code == 200


def test_backup_records_are_listed_read_only(admin_client, demo, tmp_path):
    result = export(output_dir=tmp_path)
    listing = admin_client.get(reverse("admin:sync_backuprecord_changelist"))
    assert result.path.name in listing.content.decode()
    assert admin_client.get(reverse("admin:sync_backuprecord_add")).status_code == 403
    change = admin_client.post(
        reverse("admin:sync_backuprecord_change", args=[result.backup.pk]), {"file_name": "x"}
    )
    assert change.status_code == 403


def test_admin_pages_use_the_projects_base_template(admin_client):
    response = admin_client.get(reverse("admin:index"))
    assert "admin/base_site.html" in [t.name for t in response.templates]
    assert "Crearis administration" in response.content.decode()
