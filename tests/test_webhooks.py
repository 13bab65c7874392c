"""Webhooks (sync.webhooks): every export, import and rotation is told to the configured URLs
by a signed POST, delivered after the commit and retried on its own clock. The receiver is a
real HTTP server on 127.0.0.1 that checks signatures with standardwebhooks' Webhook.verify;
retries are driven by calling the due-delivery function with the clock moved forward."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime

import pytest
import redis
from celery.signals import task_prerun
from django.core import serializers
from django.core.management import call_command
from django.utils import timezone

from crearis.celery import app as celery_app
from crearis.content.models import Tag
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from sync.models import BackupRecord, ImportRun, Job, WebhookAttempt, WebhookDelivery
from sync.rotation import Policy, rotate
from sync.tasks import deliver_webhook
from sync.webhooks import deliver, deliver_due, notify_rotation
from tests.webhook_receiver import Answer, Receiver

Status = WebhookDelivery.Status


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def secret(settings) -> str:
    settings.SYNC_WEBHOOK_SECRET = value = new_secret()
    return value


@pytest.fixture
def receive(secret):
    """receive(*answers): a running Receiver checking signatures with the project's secret."""
    started: list[Receiver] = []

    def start(*answers: Answer, secret: str = secret) -> Receiver:
        receiver = Receiver(secret, *answers).__enter__()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.__exit__(None, None, None)


@pytest.fixture
def exporting(seeded, tmp_path, django_capture_on_commit_callbacks):
    """exporting(): export the tags as a user would, with everything that runs after the
    commit (job_finished, the first delivery attempt) run too; the export's BackupRecord."""

    def run(output_dir=tmp_path) -> BackupRecord:
        with django_capture_on_commit_callbacks(execute=True):
            return export(tables=["content.Tag"], output_dir=output_dir).backup

    return run


def unreachable_url() -> str:
    """A URL on 127.0.0.1 nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def the_delivery() -> WebhookDelivery:
    return WebhookDelivery.objects.get()


def codes(delivery: WebhookDelivery) -> list[int | None]:
    return [attempt.status_code for attempt in delivery.attempts.order_by("number")]


# -- what is sent ------------------------------------------------------------------------------


def test_an_export_posts_a_signed_backup_complete_to_each_url(settings, receive, exporting):
    first, second = receive(), receive()
    settings.BACKUP_WEBHOOK_URL = [first.url, second.url]

    backup = exporting()

    backup.refresh_from_db()
    for receiver in (first, second):
        [request] = receiver.received
        assert request.refused == ""  # Webhook.verify took the signature
        event = request.payload
        assert event["type"] == "backup.complete"
        data = event["data"]
        assert data["job"] == backup.label and data["status"] == "succeeded"
        assert data["backup_id"] == str(backup.backup_id)
        assert data["tables"] == ["content.Tag"]
        assert data["records"] == {"content.Tag": Tag.objects.count()} == backup.counts
        assert data["total_records"] == Tag.objects.count() > 0
        assert data["file_name"] == backup.file_name and data["sha256"] == backup.sha256
        assert 0 <= data["duration"] < 60 and data["error"] == ""
        assert event["timestamp"].startswith(f"{backup.finished_at:%Y-%m-%dT%H:%M:%S}")
        assert request.headers["content-type"] == "application/json"
    deliveries = WebhookDelivery.objects.order_by("url")
    assert sorted(d.url for d in deliveries) == sorted([first.url, second.url])
    assert {d.status for d in deliveries} == {Status.DELIVERED}
    assert {d.job for d in deliveries} == {backup.label}
    assert [codes(d) for d in deliveries] == [[200], [200]]
    # one event, one webhook id per delivery
    assert len({first.received[0].webhook_id, second.received[0].webhook_id}) == 2
    assert {d.webhook_id for d in deliveries} == {
        first.received[0].webhook_id,
        second.received[0].webhook_id,
    }


def test_a_receiver_with_another_secret_refuses_the_signature(settings, receive, exporting):
    receiver = receive(secret=new_secret())
    settings.BACKUP_WEBHOOK_URL = receiver.url

    exporting()

    [request] = receiver.received
    assert request.refused == "No matching signature found"
    delivery = the_delivery()
    assert delivery.status == Status.PENDING and codes(delivery) == [400]


def test_a_failed_export_posts_backup_failed_with_its_error(settings, receive, exporting, tmp_path):
    receiver = receive()
    settings.BACKUP_WEBHOOK_URL = [receiver.url]
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")

    with pytest.raises(OSError):
        exporting(output_dir=not_a_folder)

    backup = BackupRecord.objects.get()
    assert backup.status == Job.Status.FAILED
    [request] = receiver.verified
    assert request.payload["type"] == "backup.failed"
    assert request.payload["data"]["status"] == "failed"
    assert request.payload["data"]["error"] == backup.error != ""


def test_imports_post_to_the_import_urls_and_dry_runs_post_nothing(
    settings, receive, exporting, django_capture_on_commit_callbacks
):
    imports, backups = receive(), receive()
    settings.IMPORT_WEBHOOK_URL = imports.url  # one URL as a string works as well
    settings.BACKUP_WEBHOOK_URL = [backups.url]
    archive = exporting().storage_path
    Tag.objects.update(description="edited here")

    with django_capture_on_commit_callbacks(execute=True):
        run_import(archive, mode="replace", dry_run=True)
        result, run = run_import(archive, mode="replace")

    assert len(backups.verified) == 1  # the export, not the imports
    [request] = imports.verified  # the real import alone
    event = request.payload
    assert event["type"] == "import.complete"
    data = event["data"]
    assert data["job"] == run.label and data["mode"] == "replace"
    assert data["backup_id"] == str(run.backup_id)
    assert data["tables"] == ["content.Tag"]
    tags = data["records"]["content.Tag"]
    assert tags["updated"] == result.tables["content.Tag"].updated == Tag.objects.count()
    assert data["total_records"] == Tag.objects.count()
    assert data["total_changes"] == result.total_changes
    assert WebhookDelivery.objects.filter(url=imports.url).count() == 1


def test_a_failed_import_posts_import_failed(
    settings, receive, tmp_path, db, django_capture_on_commit_callbacks
):
    receiver = receive()
    settings.IMPORT_WEBHOOK_URL = [receiver.url]
    broken = tmp_path / "broken.backup.tar.gz"
    broken.write_bytes(b"not an archive")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Exception):  # noqa: B017
        run_import(broken)

    run = ImportRun.objects.get()
    [request] = receiver.verified
    assert request.payload["type"] == "import.failed"
    assert request.payload["data"]["job"] == run.label
    assert request.payload["data"]["error"] == run.error != ""


@dataclass
class RotationSummary:
    kept: list[str]
    deleted: list[str]
    dry_run: bool = False


def test_a_rotation_posts_rotation_complete_to_the_backup_urls(
    settings, receive, db, django_capture_on_commit_callbacks
):
    receiver = receive()
    settings.BACKUP_WEBHOOK_URL = [receiver.url]

    with django_capture_on_commit_callbacks(execute=True):
        notify_rotation(RotationSummary(kept=["export-3"], deleted=["export-1", "export-2"]))
        notify_rotation(RotationSummary(kept=[], deleted=["export-3"], dry_run=True))

    [request] = receiver.verified
    assert request.payload["type"] == "rotation.complete"
    assert request.payload["data"]["deleted"] == ["export-1", "export-2"]


def test_a_real_rotation_posts_what_it_deleted(
    settings, receive, exporting, tmp_path, django_capture_on_commit_callbacks
):
    receiver = receive()
    settings.BACKUP_WEBHOOK_URL = [receiver.url]
    settings.BACKUP_DIR = tmp_path
    older, newer = exporting(), exporting()

    with django_capture_on_commit_callbacks(execute=True):
        rotate(Policy(keep_last=1))

    assert [r.payload["type"] for r in receiver.verified] == ["backup.complete"] * 2 + [
        "rotation.complete"
    ]
    data = receiver.verified[-1].payload["data"]
    assert [entry["id"] for entry in data["deleted"]] == [older.pk]
    assert [entry["id"] for entry in data["kept"]] == [newer.pk]


# -- retries -----------------------------------------------------------------------------------


def test_500_twice_then_200_is_three_attempts_with_the_same_webhook_id(
    settings, receive, exporting
):
    receiver = receive(Answer(500), Answer(500), Answer(200))
    settings.BACKUP_WEBHOOK_URL = [receiver.url]

    exporting()
    delivery = the_delivery()
    first_wait = delivery.next_attempt_at - delivery.last_attempt_at
    clock = delivery.last_attempt_at

    assert deliver_due(clock + first_wait - timedelta(seconds=1)) == []  # not due yet
    assert len(deliver_due(clock + first_wait)) == 1
    delivery.refresh_from_db()
    second_wait = delivery.next_attempt_at - delivery.last_attempt_at
    assert len(deliver_due(delivery.next_attempt_at)) == 1

    delivery.refresh_from_db()
    assert delivery.status == Status.DELIVERED and delivery.next_attempt_at is None
    assert delivery.attempt_count == 3 and codes(delivery) == [500, 500, 200]
    assert len(receiver.verified) == 3
    assert {request.webhook_id for request in receiver.received} == {delivery.webhook_id}
    assert len({request.body for request in receiver.received}) == 1  # the same bytes
    # the documented schedule: 1 minute, then 4, each within ±25%
    assert timedelta(seconds=45) <= first_wait <= timedelta(seconds=75)
    assert timedelta(seconds=180) <= second_wait <= timedelta(seconds=300)
    assert deliver_due(clock + timedelta(days=2)) == []  # delivered: nothing more


def test_an_unreachable_url_leaves_the_export_succeeded_and_the_delivery_failed(
    settings, secret, exporting
):
    settings.BACKUP_WEBHOOK_URL = [unreachable_url()]
    settings.SYNC_WEBHOOK_MAX_ATTEMPTS = 3

    started = time.monotonic()
    backup = exporting()
    took = time.monotonic() - started

    backup.refresh_from_db()
    assert backup.status == Job.Status.SUCCEEDED and took < 30
    delivery = the_delivery()
    assert delivery.status == Status.PENDING and delivery.attempt_count == 1
    clock = timezone.now()
    for day in (1, 2, 3, 4):
        deliver_due(clock + timedelta(days=day))
    delivery.refresh_from_db()
    assert delivery.status == Status.FAILED and delivery.next_attempt_at is None
    attempts = list(delivery.attempts.order_by("number"))
    assert [a.number for a in attempts] == [1, 2, 3]
    assert all(a.status_code is None and "ConnectError" in a.error for a in attempts)


def test_a_410_stops_every_attempt_to_that_url(settings, receive, exporting):
    receiver = receive(Answer(500), Answer(410))
    settings.BACKUP_WEBHOOK_URL = [receiver.url]

    exporting()  # answered 500: to be retried
    exporting()  # answered 410
    for day in (1, 2, 3):
        deliver_due(timezone.now() + timedelta(days=day))

    assert len(receiver.received) == 2
    first, second = WebhookDelivery.objects.order_by("pk")
    assert (first.status, codes(first)) == (Status.GONE, [500])
    assert (second.status, codes(second)) == (Status.GONE, [410])
    assert second.last_error.startswith("410 Gone")


@pytest.mark.parametrize("when", ["seconds", "http-date"])
def test_retry_after_sets_the_next_attempt(settings, receive, exporting, when):
    later = timezone.now() + timedelta(hours=1)
    retry_after = "120" if when == "seconds" else format_datetime(later, usegmt=True)
    receiver = receive(Answer(503, {"Retry-After": retry_after}), Answer(200))
    settings.BACKUP_WEBHOOK_URL = [receiver.url]

    exporting()

    delivery = the_delivery()
    wait = delivery.next_attempt_at - delivery.last_attempt_at
    if when == "seconds":
        assert wait == timedelta(seconds=120)
    else:
        assert abs(delivery.next_attempt_at - later) < timedelta(seconds=5)
    assert deliver_due(delivery.next_attempt_at - timedelta(seconds=1)) == []
    assert len(deliver_due(delivery.next_attempt_at)) == 1
    delivery.refresh_from_db()
    assert delivery.status == Status.DELIVERED and codes(delivery) == [503, 200]


def test_a_redirect_is_not_followed(settings, receive, exporting):
    elsewhere = receive()
    redirecting = receive(Answer(307, {"Location": elsewhere.url}))
    settings.BACKUP_WEBHOOK_URL = [redirecting.url]

    exporting()

    assert len(redirecting.verified) == 1 and elsewhere.received == []
    delivery = the_delivery()
    assert delivery.status == Status.PENDING and codes(delivery) == [307]
    assert "not followed" in delivery.last_error and elsewhere.url in delivery.last_error


def test_a_slow_receiver_is_cut_off_by_the_read_timeout(settings, receive, exporting):
    receiver = receive(Answer(200, delay=3))
    settings.BACKUP_WEBHOOK_URL = [receiver.url]
    settings.SYNC_WEBHOOK_READ_TIMEOUT = 0.3

    exporting()

    delivery = the_delivery()
    [attempt] = delivery.attempts.all()
    assert attempt.status_code is None and attempt.error.startswith("Timed out")
    assert attempt.duration < 2.5
    assert delivery.status == Status.PENDING


def test_a_delivery_attempt_is_taken_once(settings, receive, exporting):
    receiver = receive(Answer(500))
    settings.BACKUP_WEBHOOK_URL = [receiver.url]
    exporting()
    delivery = the_delivery()
    due = delivery.next_attempt_at

    assert deliver(delivery.pk, due) is not None
    assert deliver(delivery.pk, due) is None  # the same moment again: already taken
    assert len(receiver.received) == 2


def test_a_broken_first_attempt_does_not_reach_the_jobs_caller(settings, secret, exporting, caplog):
    settings.BACKUP_WEBHOOK_URL = [unreachable_url()]
    settings.SYNC_WEBHOOK_READ_TIMEOUT = "soon"  # breaks the delivery task itself

    backup = exporting()

    backup.refresh_from_db()
    assert backup.status == Job.Status.SUCCEEDED
    delivery = the_delivery()
    assert delivery.status == Status.PENDING and delivery.attempt_count == 0
    assert "the periodic task will send it" in caplog.text


REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def broker():
    """The Celery app with a real Redis broker instead of eager mode, its keys under a prefix
    of this test's own; the Redis list the tasks are queued in. Fails when Redis is down."""
    prefix = f"test-webhooks-{uuid.uuid4().hex}:"
    names = ("task_always_eager", "broker_url", "broker_transport_options")
    saved = {name: celery_app.conf[name] for name in names}
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    # The app keeps the connections it made (eager runs make some too): this test's broker
    # gets its own, and the others are put back afterwards.
    pools = celery_app._pool, celery_app.amqp._producer_pool
    celery_app._pool = celery_app.amqp._producer_pool = None
    celery_app.conf.update(
        task_always_eager=False,
        broker_url=REDIS_URL,
        broker_transport_options={"global_keyprefix": prefix},
    )
    try:
        yield lambda: [json.loads(message) for message in client.lrange(f"{prefix}celery", 0, -1)]
    finally:
        celery_app.conf.update(saved)
        celery_app._pool, celery_app.amqp._producer_pool = pools
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def test_with_a_broker_the_job_only_enqueues_the_delivery_id(settings, receive, exporting, broker):
    receiver = receive()
    settings.BACKUP_WEBHOOK_URL = [receiver.url]

    backup = exporting()

    backup.refresh_from_db()
    assert backup.status == Job.Status.SUCCEEDED
    delivery = the_delivery()
    assert receiver.received == [] and delivery.attempt_count == 0  # nothing sent in the job
    [message] = broker()
    assert message["headers"]["task"] == "sync.deliver_webhook"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([delivery.pk], {})
    assert settings.SYNC_WEBHOOK_SECRET.removeprefix("whsec_") not in json.dumps(message)

    deliver_webhook(*args)  # what the worker does with the message

    delivery.refresh_from_db()
    assert delivery.status == Status.DELIVERED and len(receiver.verified) == 1


# -- the secret --------------------------------------------------------------------------------


def test_the_secret_is_in_no_row_no_log_and_no_task_argument(settings, receive, exporting, caplog):
    secret = settings.SYNC_WEBHOOK_SECRET
    key = base64.b64decode(secret.removeprefix("whsec_"))
    receiver = receive(Answer(500), Answer(200))
    settings.BACKUP_WEBHOOK_URL = [receiver.url, unreachable_url()]
    tasks = []

    def seen(task=None, args=None, kwargs=None, **extra) -> None:
        tasks.append((task.name, args, kwargs))

    task_prerun.connect(seen)
    caplog.set_level(logging.DEBUG)
    try:
        exporting()
        deliver_due(timezone.now() + timedelta(days=1))
    finally:
        task_prerun.disconnect(seen)

    assert len(receiver.verified) == 2
    ids = sorted(WebhookDelivery.objects.values_list("pk", flat=True))
    assert sorted(tasks) == [("sync.deliver_webhook", [pk], {}) for pk in ids]
    rows = serializers.serialize(
        "json", [*WebhookDelivery.objects.all(), *WebhookAttempt.objects.all()]
    )
    rows += serializers.serialize("json", BackupRecord.objects.all())
    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records
    )
    assert "Webhook backup.complete" in logged  # the log was captured
    for text in (rows, logged, repr(tasks)):
        assert secret.removeprefix("whsec_") not in text
        assert key.hex() not in text
        assert base64.b64encode(key).decode().rstrip("=") not in text


# -- settings ----------------------------------------------------------------------------------


def check_messages(settings, **values) -> list[str]:
    from sync.checks import check_webhooks

    for name, value in values.items():
        setattr(settings, name, value)
    return [f"{error.id} {error.msg}" for error in check_webhooks(None)]


def test_checks_refuse_bad_urls_secrets_and_limits(settings, db):
    good = new_secret()
    assert check_messages(settings, BACKUP_WEBHOOK_URL=["https://example.com/h"],
                          IMPORT_WEBHOOK_URL="http://receiver:8000/h",
                          SYNC_WEBHOOK_SECRET=good) == []  # fmt: skip
    assert check_messages(settings, BACKUP_WEBHOOK_URL=["ftp://example.com", "example.com"]) == [
        "sync.E030 BACKUP_WEBHOOK_URL: 'ftp://example.com' is not an http:// or https:// URL "
        "with a host.",
        "sync.E030 BACKUP_WEBHOOK_URL: 'example.com' is not an http:// or https:// URL with a "
        "host.",
    ]
    assert check_messages(settings, BACKUP_WEBHOOK_URL=[], IMPORT_WEBHOOK_URL=[3]) == [
        "sync.E030 IMPORT_WEBHOOK_URL must be a URL or a list of URLs, not [3]."
    ]
    settings.IMPORT_WEBHOOK_URL = ["https://example.com/h"]
    short = "whsec_" + base64.b64encode(b"short").decode()
    for secret, problem in [
        ("", "is not set"),
        (good.removeprefix("whsec_"), 'must be "whsec_" followed by base64'),
        ("whsec_not*base64!", "is not base64"),
        (short, "must hold 24 to 64 bytes"),
    ]:
        [message] = check_messages(settings, SYNC_WEBHOOK_SECRET=secret)
        assert message.startswith(f"sync.E031 SYNC_WEBHOOK_SECRET {problem}")
        assert not secret or secret.removeprefix("whsec_") not in message
    settings.SYNC_WEBHOOK_SECRET = good
    assert check_messages(settings, SYNC_WEBHOOK_READ_TIMEOUT=0, SYNC_WEBHOOK_MAX_ATTEMPTS=1.5) == [
        "sync.E032 SYNC_WEBHOOK_READ_TIMEOUT must be a positive number of seconds, not 0.",
        "sync.E032 SYNC_WEBHOOK_MAX_ATTEMPTS must be a positive integer, not 1.5.",
    ]


def test_manage_py_check_runs_the_webhook_checks(settings, db):
    from django.core.management.base import SystemCheckError

    settings.BACKUP_WEBHOOK_URL = ["https://example.com/h"]
    settings.SYNC_WEBHOOK_SECRET = ""
    with pytest.raises(SystemCheckError, match=r"sync\.E031"):
        call_command("check")


# -- the admin ---------------------------------------------------------------------------------


def test_deliveries_and_attempts_are_visible_read_only_in_the_admin(
    settings, receive, exporting, admin_client
):
    receiver = receive(Answer(502, body=b"upstream down"))
    settings.BACKUP_WEBHOOK_URL = [receiver.url]
    backup = exporting()
    delivery = the_delivery()

    listing = admin_client.get("/admin/sync/webhookdelivery/").content.decode()
    page = admin_client.get(f"/admin/sync/webhookdelivery/{delivery.pk}/change/").content.decode()
    attempts = admin_client.get("/admin/sync/webhookattempt/").content.decode()

    assert backup.label in listing and "backup.complete" in listing
    assert delivery.webhook_id in page and "upstream down" in page and "502" in page
    assert json.loads(delivery.payload)["data"]["job"] in page
    assert "upstream down" in attempts or "HTTP 502" in attempts
    assert admin_client.get("/admin/sync/webhookdelivery/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/sync/webhookdelivery/{delivery.pk}/delete/").status_code == 403
    )
