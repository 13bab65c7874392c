"""Celery tasks: the worker's door to the engine.

Thin: each task takes primitives, calls the engine, and returns what happened as a small dict.
"""

from __future__ import annotations

from celery import shared_task

from sync import rotation

# -- rotation (docs/rotation.md) ---------------------------------------------------------------


@shared_task(name="sync.rotate")
def rotate(using: str = "default") -> dict:
    """Delete the archives the settings' retention rules no longer keep (beat runs it daily).
    A refusal (the storage cannot be listed…) fails the task: nothing was deleted."""
    return rotation.rotate(using=using).as_dict()
