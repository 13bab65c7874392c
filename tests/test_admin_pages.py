"""The sync app's admin pages through Django's test client: each page and action does its work
through the engine, and refuses (403) a staff user without its permission."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from crearis.content.models import Event, Tag
from sync.jobs.exports import export, start_export
from sync.models import BackupRecord, Job
from sync.storage import recorded_location
from tests.archive_tools import read_records
from tests.browser import backup_dir as backup_dir  # a fixture
from tests.browser import staff_user
from tests.cli import cli
from tests.workers import empty_queue, redis_url, sending_to

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:sync_backuprecord_changelist")
APP_PERMISSIONS = ["sync.run_export", "sync.run_import", "sync.download_backup",
                   "sync.upload_backup"]  # fmt: skip


def stored(backup: BackupRecord) -> Path:
    """The archive file of ``backup`` (the archive storage is a local folder in these tests)."""
    return recorded_location(backup.storage_path).path


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def operator(db) -> Client:
    """A signed-in superuser (pytest-django's admin_client hashes a password every test)."""
    return client_of(staff_user(superuser=True))


@pytest.fixture
def backup(seeded, backup_dir) -> BackupRecord:
    """A succeeded export of two tables, its archive in BACKUP_DIR."""
    return export(tables=["content.Status", "content.Tag"]).backup


# -- permissions -------------------------------------------------------------------------------


def test_the_app_has_permissions_of_its_own():
    codenames = set(
        Permission.objects.filter(content_type__app_label="sync").values_list("codename", flat=True)
    )
    assert {name.split(".")[1] for name in APP_PERMISSIONS} <= codenames


def pages(backup: BackupRecord) -> list[tuple[str, str, dict, str]]:
    """(method, url, data, permission it needs) of every page and action."""
    job = backup.label
    return [
        ("get", CHANGELIST, {}, "sync.view_backuprecord"),
        ("get", reverse("admin:sync_backuprecord_new"), {}, "sync.run_export"),
        ("post", reverse("admin:sync_backuprecord_new"), {"tables": ["content.Tag"]},
         "sync.run_export"),
        ("get", reverse("admin:sync_backuprecord_upload"), {}, "sync.upload_backup"),
        ("post", reverse("admin:sync_backuprecord_upload"), {}, "sync.upload_backup"),
        ("post", reverse("admin:sync_backuprecord_verify", args=[backup.pk]), {},
         "sync.view_backuprecord"),
        ("get", reverse("admin:sync_backuprecord_download", args=[backup.pk]), {},
         "sync.download_backup"),
        ("get", reverse("admin:sync_jobs"), {}, "sync.view_backuprecord"),
        ("get", reverse("admin:sync_job_states"), {}, "sync.view_backuprecord"),
        ("get", reverse("admin:sync_job", args=[job]), {}, "sync.view_backuprecord"),
        ("get", reverse("admin:sync_job_state", args=[job]), {}, "sync.view_backuprecord"),
        ("post", reverse("admin:sync_job_cancel", args=[job]), {}, "sync.run_export"),
    ]  # fmt: skip


@pytest.mark.parametrize("number", range(12))
def test_each_page_and_action_needs_its_permission(backup, number):
    method, url, data, permission = pages(backup)[number]
    # Every other permission of the app's pages (a change permission would imply the view
    # one; the jobs pages take either view permission: both left out there).
    views = {"sync.view_backuprecord", "sync.view_importrun"}
    left_out = views if permission in views else {permission}
    everything_else = sorted({*APP_PERMISSIONS, *views, "sync.view_syncstate"} - left_out)
    # The Export selected action is on the tag list: a user needs to see the tags to use it.
    without = client_of(staff_user(*everything_else, "content.view_tag"))
    response = getattr(without, method)(url, data)
    assert response.status_code == 403, (url, permission)

    allowed = client_of(staff_user(permission, *views, "content.view_tag"))
    response = getattr(allowed, method)(url, data)
    assert response.status_code in (200, 302), (url, permission, response.status_code)


def test_export_selected_is_neither_offered_nor_done_without_the_permission(seeded):
    """As Django does with every action a user may not use: the changelist does not offer it,
    and a forged request for it starts nothing."""
    tags = list(Tag.objects.values_list("pk", flat=True)[:2])
    viewer = client_of(staff_user("content.view_tag", "content.change_tag"))
    url = reverse("admin:content_tag_changelist")
    assert 'value="export_selected"' not in viewer.get(url).content.decode()
    response = viewer.post(
        url, {"action": "export_selected", ACTION_CHECKBOX_NAME: tags, "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert not BackupRecord.objects.exists()
    exporter = client_of(staff_user("content.view_tag", "sync.run_export"))
    assert 'value="export_selected"' in exporter.get(url).content.decode()


def test_a_signed_out_visitor_is_sent_to_the_login_page(backup):
    response = Client().get(reverse("admin:sync_backuprecord_new"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_the_backups_list_offers_only_what_the_user_may_do(backup):
    viewer = client_of(staff_user("sync.view_backuprecord"))
    page = viewer.get(CHANGELIST).content.decode()
    assert backup.file_name in page
    assert "New export…" not in page
    assert "Upload archive…" not in page

    operator = client_of(staff_user(superuser=True))
    page = operator.get(CHANGELIST).content.decode()
    assert reverse("admin:sync_backuprecord_new") in page
    assert reverse("admin:sync_backuprecord_upload") in page
    assert reverse("admin:sync_backuprecord_download", args=[backup.pk]) in page
    assert reverse("admin:sync_backuprecord_verify", args=[backup.pk]) in page
    # django-celery-beat is installed: its schedules are a click away
    assert reverse("admin:django_celery_beat_periodictask_changelist") in page


# -- New export --------------------------------------------------------------------------------


def test_new_export_lists_tables_by_app_with_counts(operator, seeded):
    page = operator.get(reverse("admin:sync_backuprecord_new")).content.decode()
    tags = Tag.objects.count()
    assert f"(content.Tag) — {tags:,} records" in page
    assert "<h3>Content</h3>" in page or "<h3>Crearis content</h3>" in page or "content" in page
    assert "runs inside this web request" in page  # no broker configured in the tests


def test_new_export_of_two_tables_writes_an_archive(operator, seeded, backup_dir):
    response = operator.post(
        reverse("admin:sync_backuprecord_new"),
        {"tables": ["content.Status", "content.Tag"], "compression": "xz"},
    )
    backup = BackupRecord.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:sync_job", args=[backup.label])
    assert backup.status == Job.Status.SUCCEEDED
    assert backup.compression == "xz"
    assert backup.user.is_superuser
    _, records = read_records(stored(backup))
    assert set(records) == {"content.Status", "content.Tag"}
    assert len(records["content.Tag"]) == Tag.objects.count()

    page = operator.get(response["Location"]).content.decode()
    assert "succeeded" in page
    assert reverse("admin:sync_backuprecord_download", args=[backup.pk]) in page


@pytest.mark.django_db(transaction=True)  # the task is sent when the request's work commits
def test_with_a_broker_a_new_export_is_handed_to_a_worker_not_run_in_the_request(seeded):
    """No worker listens on this test's queue: the job must stay queued, its task sent."""
    operator = client_of(staff_user(superuser=True))
    queue = f"sync-test-admin-{uuid.uuid4().hex[:12]}"
    broker = redis_url(5)
    empty_queue(broker, queue)
    try:
        with sending_to(broker, task_default_queue=queue):
            page = operator.get(reverse("admin:sync_backuprecord_new")).content.decode()
            response = operator.post(
                reverse("admin:sync_backuprecord_new"),
                {"tables": ["content.Tag"], "compression": "gz"},
            )
        backup = BackupRecord.objects.get()
        assert "runs inside this web request" not in page
        assert response.status_code == 302
        assert backup.status == Job.Status.QUEUED and backup.task_id and not backup.file_name
        assert redis.Redis.from_url(broker).llen(queue) == 1
    finally:
        empty_queue(broker, queue)


def test_with_dependencies_shows_what_it_adds_before_starting(operator, demo, backup_dir):
    url = reverse("admin:sync_backuprecord_new")
    form = {"tables": ["content.Event"], "with_dependencies": "on", "compression": "gz"}
    shown = operator.post(url, form)
    assert shown.status_code == 200
    assert not BackupRecord.objects.exists()
    page = shown.content.decode()
    assert "With dependencies adds" in page
    assert "content.Location" in page
    confirmed = shown.context["form"]["confirmed"].value()
    assert "content.Location" in confirmed

    started = operator.post(url, {**form, "confirmed": confirmed})
    assert started.status_code == 302
    backup = BackupRecord.objects.get()
    assert "content.Location" in backup.tables and "content.Event" in backup.tables


def test_new_export_refuses_no_tables(operator, seeded):
    response = operator.post(reverse("admin:sync_backuprecord_new"), {"compression": "gz"})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not BackupRecord.objects.exists()


def test_the_page_of_a_failed_job_shows_its_error(operator, seeded):
    failed = start_export(tables=["content.Tag"])
    BackupRecord.objects.filter(pk=failed.pk).update(
        status=Job.Status.FAILED, error='<script>alert("x")</script> went wrong'
    )
    page = operator.get(reverse("admin:sync_job", args=[failed.label])).content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; went wrong" in page
    assert '<script>alert("x")' not in page


# -- Verify, Download --------------------------------------------------------------------------


def test_verify_says_what_syncverify_says(operator, backup):
    response = operator.post(reverse("admin:sync_backuprecord_verify", args=[backup.pk]))
    command = cli("syncverify", str(stored(backup)))
    assert messages_of(response) == [
        command.out.strip().replace(str(stored(backup)), backup.file_name)
    ]


def test_verify_of_a_damaged_archive_gives_syncverifys_reason(operator, backup):
    path = stored(backup)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    response = operator.post(reverse("admin:sync_backuprecord_verify", args=[backup.pk]))
    command = cli("syncverify", str(path))
    assert command.status == 1
    assert messages_of(response) == [command.error.replace(str(path), backup.file_name)]


def test_verify_action_checks_each_selected_archive(operator, backup):
    response = operator.post(
        CHANGELIST, {"action": "verify_selected", ACTION_CHECKBOX_NAME: [backup.pk]}
    )
    assert [m.split(":")[0] for m in messages_of(response)] == [backup.file_name]
    assert "all checksums match" in messages_of(response)[0]


def test_download_streams_the_archive(operator, backup):
    response = operator.get(reverse("admin:sync_backuprecord_download", args=[backup.pk]))
    assert response.status_code == 200
    assert response.streaming
    assert backup.file_name in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == stored(backup).read_bytes()


def test_download_of_a_missing_archive_is_404(operator, backup):
    stored(backup).unlink()
    response = operator.get(reverse("admin:sync_backuprecord_download", args=[backup.pk]))
    assert response.status_code == 404


# -- Upload ------------------------------------------------------------------------------------


def upload(client, path: Path, name: str | None = None):
    archive = SimpleUploadedFile(name or path.name, path.read_bytes())
    return client.post(reverse("admin:sync_backuprecord_upload"), {"archive": archive})


def test_an_uploaded_archive_is_verified_stored_and_recorded(operator, seeded, tmp_path,
                                                             backup_dir):  # fmt: skip
    written = export(tables=["content.Tag"], output_dir=tmp_path)
    written.backup.delete()  # an archive from elsewhere: no record of it here
    response = upload(operator, written.path)
    assert response.status_code == 302
    recorded = BackupRecord.objects.get()
    assert recorded.status == Job.Status.SUCCEEDED
    assert recorded.file_name == written.path.name
    assert stored(recorded).parent == backup_dir
    assert stored(recorded).read_bytes() == written.path.read_bytes()
    assert recorded.counts == {"content.Tag": Tag.objects.count()}
    assert recorded.sha256 == written.backup.sha256
    assert messages_of(response) == [f"{written.path.name}: verified and recorded."]


def test_a_bad_archive_is_refused_with_syncverifys_reason(operator, backup, tmp_path):
    damaged = tmp_path / backup.file_name
    data = stored(backup).read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    before = sorted(p.name for p in stored(backup).parent.iterdir())
    response = upload(operator, damaged)
    assert response.status_code == 200
    reason = cli("syncverify", str(damaged)).error.replace(str(damaged), damaged.name)
    assert reason in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
    assert BackupRecord.objects.count() == 1
    assert sorted(p.name for p in stored(backup).parent.iterdir()) == before


def test_an_archive_recorded_already_is_refused(operator, backup):
    response = upload(operator, stored(backup), name="again.backup.tar.gz")
    assert response.status_code == 200
    assert "this archive is recorded already" in response.content.decode()
    assert BackupRecord.objects.count() == 1


def test_an_archive_above_the_upload_limit_is_refused(operator, backup, settings):
    settings.SYNC_UPLOAD_MAX_SIZE = 100
    response = upload(operator, stored(backup), name="big.backup.tar.gz")
    assert response.status_code == 200
    assert "larger than the upload limit" in response.content.decode()
    assert BackupRecord.objects.count() == 1


def test_a_request_far_above_the_upload_limit_is_refused_unread(operator, seeded, settings,
                                                                 tmp_path):  # fmt: skip
    settings.SYNC_UPLOAD_MAX_SIZE = 1000
    big = tmp_path / "big.backup.tar.gz"
    big.write_bytes(b"x" * (2 * 1024 * 1024))
    response = upload(operator, big)
    assert response.status_code == 200
    assert "larger than the upload limit, 1000\xa0bytes" in response.content.decode()
    assert "big.backup.tar.gz" not in response.content.decode()  # no verification was tried
    assert not BackupRecord.objects.exists()


def test_a_file_not_named_as_an_archive_is_refused(operator, seeded, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    response = upload(operator, other)
    assert "not a backup archive" in response.content.decode()
    assert not BackupRecord.objects.exists()


# -- Export selected ---------------------------------------------------------------------------


def test_export_selected_asks_then_exports_only_the_selected_records(operator, demo,
                                                                     backup_dir):  # fmt: skip
    chosen = list(Event.objects.order_by("pk")[:2])
    url = reverse("admin:content_event_changelist")
    selection = {"action": "export_selected", ACTION_CHECKBOX_NAME: [e.pk for e in chosen]}
    asked = operator.post(url, selection)
    assert asked.status_code == 200
    page = asked.content.decode()
    assert "Export 2 selected events" in page
    assert "content.Location" in page  # what "with the records they reference" would add
    assert not BackupRecord.objects.exists()

    done = operator.post(url, {**selection, "post": "yes"})
    backup = BackupRecord.objects.get()
    assert done["Location"] == reverse("admin:sync_job", args=[backup.label])
    assert backup.status == Job.Status.SUCCEEDED
    assert backup.kind == "selected"
    _, records = read_records(stored(backup))
    assert list(records) == ["content.Event"]
    assert sorted(r["xmlid"] for r in records["content.Event"]) == sorted(e.xmlid for e in chosen)


def test_export_selected_with_references_takes_what_they_point_at(operator, demo,
                                                                  backup_dir):  # fmt: skip
    event = Event.objects.exclude(location=None).order_by("pk").first()
    operator.post(
        reverse("admin:content_event_changelist"),
        {"action": "export_selected", ACTION_CHECKBOX_NAME: [event.pk], "post": "yes",
         "with_references": "on"},
    )  # fmt: skip
    backup = BackupRecord.objects.get()
    _, records = read_records(stored(backup))
    assert [r["xmlid"] for r in records["content.Event"]] == [event.xmlid]
    assert [r["xmlid"] for r in records["content.Location"]] == [event.location.xmlid]
    from tests.archive_tools import dangling_references

    assert dangling_references(stored(backup)) == []


def test_an_export_of_selected_records_is_read_by_syncimport(operator, demo, backup_dir):
    tags = list(Tag.objects.order_by("pk")[:3])
    operator.post(
        reverse("admin:content_tag_changelist"),
        {"action": "export_selected", ACTION_CHECKBOX_NAME: [t.pk for t in tags], "post": "yes"},
    )
    backup = BackupRecord.objects.get()
    originals = {t.name: t.description for t in tags}
    Tag.objects.filter(pk__in=[t.pk for t in tags]).update(description="changed here")
    outcome = cli("syncimport", str(stored(backup)), mode="replace", tables=["content.Tag"],
                  no_input=True)  # fmt: skip
    assert outcome.status == 0, outcome.error
    assert {t.name: t.description for t in Tag.objects.filter(name__in=originals)} == originals


def test_export_selected_is_on_every_syncable_registered_model(operator, seeded):
    from django.contrib import admin

    request = operator.get(CHANGELIST).wsgi_request
    for model, model_admin in admin.site._registry.items():
        offered = "export_selected" in model_admin.get_actions(request)
        assert offered == (model._meta.app_label != "sync"), model


# -- Jobs --------------------------------------------------------------------------------------


def test_the_jobs_page_lists_recent_jobs_with_their_errors(operator, backup):
    failed = start_export(tables=["content.Tag"])
    BackupRecord.objects.filter(pk=failed.pk).update(status=Job.Status.FAILED, error="disk <full>")
    page = operator.get(reverse("admin:sync_jobs")).content.decode()
    assert backup.label in page and failed.label in page
    assert "disk &lt;full&gt;" in page


def test_the_job_state_endpoint_gives_progress_as_json(operator, backup):
    state = operator.get(reverse("admin:sync_job_state", args=[backup.label])).json()
    assert state["name"] == backup.label
    assert state["status"] == "succeeded"
    assert state["finished"] is True
    assert state["done"] == backup.total_records
    states = operator.get(reverse("admin:sync_job_states")).json()
    assert [job["name"] for job in states["jobs"]] == [backup.label]


def test_an_unknown_job_is_404(operator, seeded):
    assert operator.get(reverse("admin:sync_job", args=["export-999"])).status_code == 404
    assert operator.get(reverse("admin:sync_job", args=["nonsense"])).status_code == 404


def test_cancel_of_a_queued_job_cancels_it(operator, seeded):
    queued = start_export(tables=["content.Tag"])
    response = operator.post(reverse("admin:sync_job_cancel", args=[queued.label]))
    queued.refresh_from_db()
    assert queued.status == Job.Status.CANCELLED
    assert response["Location"] == reverse("admin:sync_jobs")


def test_cancel_of_an_ended_job_says_so(operator, backup):
    response = operator.post(reverse("admin:sync_job_cancel", args=[backup.label]))
    assert messages_of(response) == [
        f"{backup.label} has already ended (succeeded); nothing to cancel."
    ]


def test_cancel_is_post_only(operator, seeded):
    queued = start_export(tables=["content.Tag"])
    response = operator.get(reverse("admin:sync_job_cancel", args=[queued.label]))
    assert response.status_code == 405
    queued.refresh_from_db()
    assert queued.status == Job.Status.QUEUED


def test_cancel_needs_the_csrf_token(seeded):
    queued = start_export(tables=["content.Tag"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user(superuser=True))
    response = client.post(reverse("admin:sync_job_cancel", args=[queued.label]))
    assert response.status_code == 403
    queued.refresh_from_db()
    assert queued.status == Job.Status.QUEUED


def test_a_running_job_shows_a_progress_bar_in_the_list(operator, seeded):
    from sync.jobs.channel import Progress
    from sync.jobs.lifecycle import channel_of, claim

    running = start_export(tables=["content.Tag"])
    claim(running)
    channel_of(running).publish(
        Progress("reading", "content.Tag", 5, 20, heartbeat=__import__("time").time())
    )
    try:
        page = operator.get(CHANGELIST).content.decode()
    finally:
        channel_of(running).clear()
    assert '<progress value="5" max="20"></progress>' in page
    assert "reading · content.Tag · 5/20 records" in page


@pytest.mark.parametrize("value", [0, -1, "2GB", None])
def test_an_upload_limit_that_is_not_a_positive_int_is_refused(settings, value):
    from django.core.checks import run_checks

    settings.SYNC_UPLOAD_MAX_SIZE = value
    assert [e.msg for e in run_checks() if e.id == "sync.E040"] == [
        f"SYNC_UPLOAD_MAX_SIZE must be a positive number of bytes, not {value!r}."
    ]
