"""Celery tasks: the worker's door to the engine.

Thin: each task takes primitives, calls the engine, and returns what happened as a small dict.
"""

from __future__ import annotations

from celery import shared_task

from sync import rotation, webhooks

# -- rotation (docs/rotation.md) ---------------------------------------------------------------


@shared_task(name="sync.rotate")
def rotate(using: str = "default") -> dict:
    """Delete the archives the settings' retention rules no longer keep (beat runs it daily).
    A refusal (the storage cannot be listed…) fails the task: nothing was deleted."""
    return rotation.rotate(using=using).as_dict()


# -- webhooks (docs/webhooks.md) ---------------------------------------------------------------

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
