"""What a test compares to prove that a refused import changed nothing: every row of every
content table (the ``content`` and ``awkward`` apps, M2M link tables included), ids and all."""

from __future__ import annotations

import hashlib

from django.apps import apps

FINGERPRINTED_APPS = ("content", "awkward")


def fingerprinted_models() -> list:
    return [
        model
        for model in apps.get_models(include_auto_created=True)
        if model._meta.app_label in FINGERPRINTED_APPS and not model._meta.proxy
    ]


def fingerprint(using: str = "default") -> dict[str, tuple[int, str]]:
    """Table → (row count, sha256 of every row's columns in id order). Rows are read through
    the base manager, so rows a default manager hides count too."""
    result = {}
    for model in fingerprinted_models():
        attnames = [f.attname for f in model._meta.concrete_fields]
        rows = model._base_manager.using(using).order_by("pk").values_list(*attnames)
        digest = hashlib.sha256()
        count = 0
        for row in rows.iterator(2000):
            digest.update(repr(row).encode())
            count += 1
        result[model._meta.db_table] = (count, digest.hexdigest())
    return result
