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
