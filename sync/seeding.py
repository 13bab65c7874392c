"""System data (statuses, tags, config keys) that the platform needs in every database.

It lives in a data file in the repository, not in migrations: migrations hold schema only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from django.apps import apps
from django.db import transaction

from sync.schema import sync_key_fields

SYSTEM_DATA_FILE = Path(__file__).resolve().parent.parent / "crearis/content/data/system.json"


@dataclass
class SeedResult:
    created: Counter = field(default_factory=Counter)
    updated: Counter = field(default_factory=Counter)
    unchanged: Counter = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        return bool(+self.created or +self.updated)


def seed_system_data(
    update: bool = False, using: str = "default", path: Path = SYSTEM_DATA_FILE
) -> SeedResult:
    """Insert the system rows that are missing; with ``update``, overwrite changed ones too."""
    data = orjson.loads(path.read_bytes())
    result = SeedResult()
    with transaction.atomic(using=using):
        for label, records in data["tables"].items():
            model = apps.get_model(label)
            key_fields = sync_key_fields(model)
            manager = model._default_manager.using(using)
            for record in records:
                lookup = {name: record[name] for name in key_fields}
                values = {k: v for k, v in record.items() if k not in lookup}
                row = manager.filter(**lookup).first()
                if row is None:
                    manager.create(**lookup, **values)
                    result.created[label] += 1
                elif update and any(getattr(row, k) != v for k, v in values.items()):
                    for k, v in values.items():
                        setattr(row, k, v)
                    row.save(using=using)
                    result.updated[label] += 1
                else:
                    result.unchanged[label] += 1
    return result
