"""Webhooks: a signed POST to each configured URL after every export, import and rotation.

A job's end (``sync.signals.job_finished``) becomes one ``WebhookDelivery`` per URL of
``BACKUP_WEBHOOK_URL`` (exports, rotations) or ``IMPORT_WEBHOOK_URL`` (imports; dry runs send
none). Once that is committed, the Celery task ``sync.deliver_webhook`` makes the first
attempt; the job itself never waits for a receiver, and no answer of one can fail it. A failed
attempt puts the delivery's next attempt time on its row (exponential backoff with jitter, or
the receiver's ``Retry-After``) and the periodic task ``sync.deliver_due_webhooks`` picks up the
deliveries that are due: no long Celery countdown outlives a broker's visibility timeout.

Requests follow the Standard Webhooks spec (``webhook-id``, stable across attempts;
``webhook-timestamp``; ``webhook-signature`` by ``standardwebhooks``). Redirects are not
followed; a 410 stops every attempt to that URL. The secret is read from the settings when a
request is signed, and written nowhere else. See docs/webhooks.md.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.core.serializers.json import DjangoJSONEncoder
from django.db import router, transaction
from django.utils import timezone
from standardwebhooks import Webhook

from sync.conf import sync_settings
from sync.models import BackupRecord, ImportRun, Job, WebhookAttempt, WebhookDelivery

logger = logging.getLogger(__name__)

BACKUP_COMPLETE = "backup.complete"
BACKUP_FAILED = "backup.failed"
IMPORT_COMPLETE = "import.complete"
IMPORT_FAILED = "import.failed"
ROTATION_COMPLETE = "rotation.complete"

SECRET_PREFIX = "whsec_"
USER_AGENT = "crearis-sync-webhooks"

# The retry schedule (docs/webhooks.md): the n-th retry waits FIRST_RETRY · BACKOFF_FACTOR^(n-1)
# seconds, at most LONGEST_WAIT, each wait drawn within ±JITTER of that so that receivers coming
# back are not hit by every sender at once. A Retry-After answer replaces the wait (up to a day).
FIRST_RETRY = 60
BACKOFF_FACTOR = 4
LONGEST_WAIT = 6 * 3600
JITTER = 0.25
LONGEST_RETRY_AFTER = 24 * 3600
# How long a claimed attempt keeps others off its delivery beyond its own timeouts: a worker
# that died while sending leaves the delivery due again after this.
CLAIM_MARGIN = 60
RESPONSE_KEPT = 1000  # characters of a receiver's answer kept on the attempt


# -- settings ----------------------------------------------------------------------------------


def secret_problem(value: Any, required: bool) -> str | None:
    """What is wrong with ``value`` as SYNC_WEBHOOK_SECRET, or None; never repeats the value."""
    if not value:
        return "is not set; webhooks are signed with it." if required else None
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        return f'must be "{SECRET_PREFIX}" followed by base64 (a Standard Webhooks secret).'
    try:
        key = signing_key(value)
    except (binascii.Error, ValueError):
        return f'is not base64 after "{SECRET_PREFIX}".'
    if not 24 <= len(key) <= 64:
        return f"must hold 24 to 64 bytes (Standard Webhooks); it holds {len(key)}."
    return None


def signing_key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a webhook URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return f"{url!r} is not a URL."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL with a host."
    return None


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """What happened, as receivers get it: ``{"type", "timestamp", "data"}`` (the payload
    shape the Standard Webhooks spec suggests)."""

    type: str
    timestamp: datetime
    data: dict[str, Any]
    job: str = ""

    def payload(self) -> str:
        body = {"type": self.type, "timestamp": self.timestamp, "data": self.data}
        return json.dumps(body, cls=DjangoJSONEncoder)


def job_event(job: Job) -> Event | None:
    """The event of a finished export or import; None for a dry run (it changed nothing)."""
    if isinstance(job, ImportRun) and job.dry_run:
        return None
    succeeded = job.status == Job.Status.SUCCEEDED
    if isinstance(job, BackupRecord):
        kind, details = "backup", export_details(job)
    else:
        kind, details = "import", import_details(job)
    data = {
        "job": job.label,
        "status": job.status,
        "database": job.database,
        "backup_id": str(job.backup_id) if job.backup_id else None,
        **details,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "duration": duration(job),
        "error": job.error,
    }
    event_type = f"{kind}.complete" if succeeded else f"{kind}.failed"
    return Event(event_type, job.finished_at or timezone.now(), data, job.label)


def export_details(backup: BackupRecord) -> dict[str, Any]:
    return {
        "tables": list(backup.tables),
        "records": dict(backup.counts),
        "total_records": backup.total_records,
        "kind": backup.kind,
        "file_name": backup.file_name,
        "size": backup.size,
        "sha256": backup.sha256,
    }


# What an import's per-table counts hold, besides the table's name and its notes.
IMPORT_COUNTS = ("new", "updated", "unchanged", "skipped", "deleted", "dropped", "same_stamp")
ARCHIVE_RECORDS = ("new", "updated", "unchanged", "skipped", "dropped", "same_stamp")


def import_details(run: ImportRun) -> dict[str, Any]:
    """Per table what the import did to the archive's records (``records``); the total of
    records read from the archive, and of rows changed (new, updated, deleted)."""
    records = {
        label: {name: counts.get(name, 0) for name in IMPORT_COUNTS}
        for label, counts in run.counts.items()
    }
    return {
        "tables": list(records) or list(run.tables),
        "records": records,
        "total_records": sum(sum(t[name] for name in ARCHIVE_RECORDS) for t in records.values()),
        "total_changes": sum(t["new"] + t["updated"] + t["deleted"] for t in records.values()),
        "mode": run.mode,
        "archive": run.archive,
    }


def duration(job: Job) -> float | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return round((job.finished_at - job.started_at).total_seconds(), 3)


def on_job_finished(sender: type[Job], job: Job, **kwargs: Any) -> None:
    """Receiver of ``job_finished``: queue the job's event for its webhook URLs. Never raises
    into the job's caller: a webhook problem is logged, the job stands as it ended."""
    try:
        event = job_event(job)
        if event is not None:
            setting = "IMPORT_WEBHOOK_URL" if isinstance(job, ImportRun) else "BACKUP_WEBHOOK_URL"
            notify(event, getattr(sync_settings, setting))
    except Exception:
        logger.exception("The webhook deliveries of %s could not be recorded.", job.label)


def notify_rotation(summary: Any, job: str = "") -> list[WebhookDelivery]:
    """Queue ``rotation.complete`` for BACKUP_WEBHOOK_URL, with ``summary`` (a mapping, a
    dataclass, or an object with ``as_dict()``) as its data; none for a dry run."""
    data = as_data(summary)
    if data.get("dry_run"):
        return []
    event = Event(ROTATION_COMPLETE, timezone.now(), data, job or str(data.get("job") or ""))
    return notify(event, sync_settings.BACKUP_WEBHOOK_URL)


def on_rotation_finished(sender: Any, result: Any, **kwargs: Any) -> None:
    """Receiver of ``rotation_finished`` (a ``sync.rotation.RotationResult``); never raises
    into the rotation's caller."""
    try:
        notify_rotation(result)
    except Exception:
        logger.exception("The webhook deliveries of a rotation could not be recorded.")


def as_data(summary: Any) -> dict[str, Any]:
    if hasattr(summary, "as_dict"):
        return dict(summary.as_dict())
    if dataclasses.is_dataclass(summary) and not isinstance(summary, type):
        return dataclasses.asdict(summary)
    if isinstance(summary, Mapping):
        return dict(summary)
    raise TypeError(f"A rotation summary must be a mapping or a dataclass, not {summary!r}.")


def notify(event: Event, urls: Iterable[str]) -> list[WebhookDelivery]:
    """Record one delivery of ``event`` per URL; each is handed to a worker once committed."""
    urls = list(dict.fromkeys(urls))
    if not urls:
        return []
    using = delivery_database()
    payload = event.payload()
    now = timezone.now()
    with transaction.atomic(using=using):
        deliveries = [
            WebhookDelivery.objects.using(using).create(
                url=url, event=event.type, job=event.job, payload=payload, next_attempt_at=now
            )
            for url in urls
        ]
        ids = [delivery.pk for delivery in deliveries]
        transaction.on_commit(lambda: hand_to_worker(ids), using=using)
    return deliveries


def hand_to_worker(delivery_ids: list[int]) -> None:
    """Enqueue the first attempt of each delivery. Without a broker the task runs here (Celery
    eager mode); if it cannot be enqueued or fails, the periodic task sends it later."""
    from sync.tasks import deliver_webhook

    for delivery_id in delivery_ids:
        try:
            deliver_webhook.delay(delivery_id)
        except Exception:
            logger.warning(
                "Webhook delivery %s was not handed to a worker; the periodic task will send it.",
                delivery_id,
                exc_info=True,
            )


def delivery_database() -> str:
    return router.db_for_write(WebhookDelivery) or "default"


# -- delivering --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How one POST went: the receiver's status code and the start of its answer, or the
    error that left no answer."""

    status_code: int | None
    error: str
    response: str
    duration: float
    retry_after: timedelta | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def deliver_due(now: datetime | None = None, limit: int = 100) -> list[WebhookDelivery]:
    """Attempt each pending delivery whose next attempt is due at ``now`` (default: now),
    oldest first, at most ``limit``; return those attempted here."""
    now = now or timezone.now()
    using = delivery_database()
    due = (
        WebhookDelivery.objects.using(using)
        .filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    return [delivery for pk in list(due) if (delivery := deliver(pk, now)) is not None]


def deliver(delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Make the next attempt of delivery ``delivery_id`` if it is pending and due at ``now``;
    None if it is not, or another worker took this attempt. Records the attempt and what comes
    next (delivered, another attempt at a time, or given up)."""
    now = now or timezone.now()
    delivery = claim(delivery_id, now)
    if delivery is None:
        return None
    answer = post(delivery)
    record(delivery, answer, now)
    return delivery


def claim(delivery_id: int, now: datetime) -> WebhookDelivery | None:
    """Take the next attempt of the delivery, in one conditional update: of two workers (the
    task and the periodic task) only one sends it. The attempt count goes up first; the next
    attempt time moves past this attempt's timeouts, so a worker that dies while sending
    leaves the delivery due again."""
    deliveries = WebhookDelivery.objects.using(delivery_database())
    delivery = deliveries.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now
    ).first()
    if delivery is None:
        return None
    limits = timeouts()
    hold = timedelta(seconds=limits.connect + limits.read + CLAIM_MARGIN)
    taken = deliveries.filter(pk=delivery.pk, attempt_count=delivery.attempt_count).update(
        attempt_count=delivery.attempt_count + 1, next_attempt_at=now + hold, last_attempt_at=now
    )
    if not taken:
        return None
    delivery.attempt_count += 1
    delivery.next_attempt_at, delivery.last_attempt_at = now + hold, now
    return delivery


def timeouts() -> httpx.Timeout:
    read = sync_settings.SYNC_WEBHOOK_READ_TIMEOUT
    return httpx.Timeout(read, connect=sync_settings.SYNC_WEBHOOK_CONNECT_TIMEOUT)


def post(delivery: WebhookDelivery) -> Answer:
    """POST the delivery's payload, signed, once: no redirect followed, within the timeouts."""
    started = time.monotonic()
    secret = sync_settings.SYNC_WEBHOOK_SECRET
    problem = secret_problem(secret, required=True)
    if problem:
        return Answer(None, f"Not sent: SYNC_WEBHOOK_SECRET {problem}", "", 0.0)
    try:
        with httpx.Client(timeout=timeouts(), follow_redirects=False) as client:
            headers = signed_headers(delivery, secret)
            with client.stream(
                "POST", delivery.url, content=delivery.payload.encode(), headers=headers
            ) as response:
                text = start_of(response)
    except httpx.TimeoutException as exc:
        return Answer(None, f"Timed out: {describe(exc)}", "", time.monotonic() - started)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Answer(None, describe(exc), "", time.monotonic() - started)
    return Answer(
        response.status_code,
        answer_error(response),
        text,
        time.monotonic() - started,
        retry_after(response.headers.get("retry-after")),
    )


def signed_headers(delivery: WebhookDelivery, secret: str) -> dict[str, str]:
    sent_at = datetime.now(UTC)  # the receiver checks it against its clock: always the real one
    signature = Webhook(secret).sign(delivery.webhook_id, sent_at, delivery.payload)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }


def start_of(response: httpx.Response) -> str:
    """The first RESPONSE_KEPT characters of the answer, read no further."""
    kept = b""
    for chunk in response.iter_bytes():
        kept += chunk
        if len(kept) >= RESPONSE_KEPT:
            break
    return kept.decode("utf-8", "replace")[:RESPONSE_KEPT]


def describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def answer_error(response: httpx.Response) -> str:
    code = response.status_code
    if 200 <= code < 300:
        return ""
    if code == 410:
        return "410 Gone: no more attempts to this URL."
    if response.is_redirect:
        where = response.headers.get("location", "nowhere")
        return f"HTTP {code}: redirect to {where} not followed (webhooks are not redirected)."
    return f"HTTP {code} {response.reason_phrase}".rstrip()


def retry_after(value: str | None) -> timedelta | None:
    """A Retry-After header (seconds, or an HTTP date) as a wait of at most a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - timezone.now()).total_seconds()
    return timedelta(seconds=min(max(seconds, 0.0), LONGEST_RETRY_AFTER))


def backoff(attempts_made: int) -> timedelta:
    """The wait after ``attempts_made`` failed attempts, jittered."""
    nominal = min(FIRST_RETRY * BACKOFF_FACTOR ** (attempts_made - 1), LONGEST_WAIT)
    return timedelta(seconds=nominal * random.uniform(1 - JITTER, 1 + JITTER))


def record(delivery: WebhookDelivery, answer: Answer, now: datetime) -> None:
    """Write the attempt and what comes next on the delivery."""
    Status = WebhookDelivery.Status
    if answer.delivered:
        status, next_attempt = Status.DELIVERED, None
    elif answer.status_code == 410:
        status, next_attempt = Status.GONE, None
    elif delivery.attempt_count >= sync_settings.SYNC_WEBHOOK_MAX_ATTEMPTS:
        status, next_attempt = Status.FAILED, None
    else:
        status = Status.PENDING
        next_attempt = now + (answer.retry_after or backoff(delivery.attempt_count))
    delivery.status, delivery.next_attempt_at = status, next_attempt
    delivery.last_status_code, delivery.last_error = answer.status_code, answer.error
    using = delivery_database()
    with transaction.atomic(using=using):
        WebhookAttempt.objects.using(using).create(
            delivery=delivery,
            number=delivery.attempt_count,
            attempted_at=timezone.now(),
            status_code=answer.status_code,
            error=answer.error,
            duration=round(answer.duration, 3),
            response=answer.response,
        )
        delivery.save(
            using=using,
            update_fields=["status", "next_attempt_at", "last_status_code", "last_error"],
        )
        if status == Status.GONE:
            stop_deliveries_to(delivery.url, using)
    log_outcome(delivery)


def stop_deliveries_to(url: str, using: str) -> None:
    """The receiver said the URL is gone (410): no pending delivery goes there any more."""
    WebhookDelivery.objects.using(using).filter(
        url=url, status=WebhookDelivery.Status.PENDING
    ).update(
        status=WebhookDelivery.Status.GONE,
        next_attempt_at=None,
        last_error="Not sent: another delivery to this URL was answered 410 Gone.",
    )


def log_outcome(delivery: WebhookDelivery) -> None:
    what = f"Webhook {delivery.event} ({delivery.webhook_id}) to {delivery.url}"
    attempt = f"attempt {delivery.attempt_count}"
    if delivery.status == WebhookDelivery.Status.DELIVERED:
        logger.info("%s delivered at %s.", what, attempt)
    elif delivery.status == WebhookDelivery.Status.PENDING:
        logger.info(
            "%s: %s failed (%s); next at %s.",
            what,
            attempt,
            delivery.last_error,
            delivery.next_attempt_at,
        )
    else:
        logger.warning("%s given up after %s: %s", what, attempt, delivery.last_error)
