"""Celery tasks of the sync app: each takes ids, calls the engine, and returns."""

from __future__ import annotations

from celery import shared_task

from sync import webhooks

# A delivery attempt waits at most its two timeouts; the periodic run sends up to 100.
WEBHOOK_LIMITS = {"soft_time_limit": 9 * 60, "time_limit": 10 * 60}


@shared_task(name="sync.deliver_webhook", ignore_result=True, **WEBHOOK_LIMITS)
def deliver_webhook(delivery_id: int) -> None:
    """Make the next attempt of one webhook delivery, if it is still due (safe to run twice)."""
    webhooks.deliver(delivery_id)


@shared_task(name="sync.deliver_due_webhooks", ignore_result=True, **WEBHOOK_LIMITS)
def deliver_due_webhooks() -> int:
    """Attempt the webhook deliveries whose next attempt is due (run every minute by beat)."""
    return len(webhooks.deliver_due())
