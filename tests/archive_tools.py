"""Test helpers that take a real archive apart and put an edited copy together."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import orjson

from sync.archive import INDEX_NAME


def read_records(path: Path) -> tuple[dict, dict[str, list[dict]]]:
    """(index, records by model label) of an archive, read with plain tarfile."""
    with tarfile.open(path, "r:*") as tar:
        index = orjson.loads(tar.extractfile(INDEX_NAME).read())
        records = {
            t["model"]: [orjson.loads(line) for line in tar.extractfile(t["member"])]
            for t in index["tables"]
        }
    return index, records


def rewrite_archive(
    source: Path,
    target: Path,
    edit_records: Callable[[str, list[dict]], list[dict]] = lambda label, records: records,
    edit_index: Callable[[dict], None] = lambda index: None,
    edit_bytes: Callable[[str, bytes], bytes] = lambda label, data: data,
) -> Path:
    """Copy ``source`` to ``target`` (gz) with records, member bytes and index edited;
    checksums recomputed, so only what the edit itself breaks is wrong."""
    index, records = read_records(source)
    members = {}
    for table in index["tables"]:
        lines = [
            orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE)
            for r in edit_records(table["model"], records[table["model"]])
        ]
        data = edit_bytes(table["model"], b"".join(lines))
        table.update(count=len(lines), size=len(data), sha256=hashlib.sha256(data).hexdigest())
        members[table["member"]] = data
    index["total_records"] = sum(t["count"] for t in index["tables"])
    edit_index(index)
    with tarfile.open(target, "w:gz") as tar:
        for name, data in [(INDEX_NAME, orjson.dumps(index)), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def dangling_references(path: Path) -> list[str]:
    """Every reference (foreign key or M2M item) in the archive to a record it does not hold,
    as ``"Model.field of key → Target key"``. Keys are compared flattened, as sync keys are."""
    index, records = read_records(path)
    tables = {t["model"]: t for t in index["tables"]}

    def key_of(label: str, record: dict) -> tuple:
        parts: list = []
        for name in tables[label]["key_fields"]:
            value = record[name]
            is_reference = name in tables[label]["references"]
            parts.extend(value if is_reference and isinstance(value, list) else [value])
        return tuple(parts)

    keys = {label: {key_of(label, r) for r in rows} for label, rows in records.items()}
    found = []
    for label, rows in records.items():
        table = tables[label]
        for name, target in table["references"].items():
            many = table["fields"][name] == "ManyToManyField"
            held = keys.get(target, set())
            for record in rows:
                values = record[name] if many else [record[name]]
                for value in values:
                    if value is None:
                        continue
                    if (tuple(value) if isinstance(value, list) else (value,)) not in held:
                        key = key_of(label, record)
                        found.append(f"{label}.{name} of {key!r} → {target} {value!r}")
    return found
