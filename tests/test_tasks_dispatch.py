"""``dispatch`` with a broker, seen from Redis: a job is handed to a worker when the
transaction that created it commits, never before, and never when it rolls back. No worker
listens on this test's queue: the message is read where a worker would take it."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest
import redis
from celery import current_app
from django.db import transaction

from sync.jobs.dispatch import dispatch, execute_queued
from sync.jobs.exports import start_export
from sync.models import BackupRecord, Job
from tests.workers import empty_queue, redis_url

BROKER = redis_url(5)
QUEUE = f"sync-test-dispatch-{uuid.uuid4().hex[:12]}"  # no worker reads it


@pytest.fixture
def broker():
    """This process's Celery app sends to Redis (instead of running tasks eagerly)."""
    conf = current_app.conf
    saved = {name: conf[name] for name in ("broker_url", "task_always_eager", "task_default_queue")}
    empty_queue(BROKER, QUEUE)
    conf.update(broker_url=BROKER, task_always_eager=False, task_default_queue=QUEUE)
    client = redis.Redis.from_url(BROKER)
    yield client
    client.delete(QUEUE)
    client.close()
    conf.update(saved)
    current_app.pool.force_close_all()


def queued_messages(client: redis.Redis) -> list[dict]:
    """The task messages waiting in QUEUE: their headers and arguments."""
    messages = [orjson.loads(raw) for raw in client.lrange(QUEUE, 0, -1)]
    return [
        message["headers"] | {"args": orjson.loads(base64.b64decode(message["body"]))[0]}
        for message in messages
    ]


@pytest.mark.django_db(transaction=True)
def test_a_job_is_handed_to_a_worker_when_its_transaction_commits(broker):
    with transaction.atomic():
        backup = start_export(tables=["content.Tag"])
        dispatch(backup)
        assert queued_messages(broker) == []  # a worker would not find the row yet

    [message] = queued_messages(broker)
    assert (message["task"], message["id"], message["args"]) == (
        "sync.export",
        backup.task_id,
        [backup.pk, "default"],
    )
    assert BackupRecord.objects.get().task_id == backup.task_id
    assert BackupRecord.objects.get().status == Job.Status.QUEUED  # nothing ran here


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_transaction_rolls_back_is_never_handed_over(broker):
    with pytest.raises(RuntimeError), transaction.atomic():
        dispatch(start_export(tables=["content.Tag"]))
        raise RuntimeError("the request failed after creating the job")

    assert queued_messages(broker) == []
    assert not BackupRecord.objects.exists()


@pytest.mark.django_db
def test_a_task_for_a_job_deleted_before_a_worker_took_it_does_nothing():
    delivery = execute_queued("export", 999, "default")

    assert (delivery.job, delivery.executed) == ("export-999", False)
    assert delivery.reason == "There is no export-999 in database 'default'."
