"""sync.errors: every engine error is a SyncError, and errors about a record say where."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sync
from crearis.content.models import User
from sync.errors import SyncError
from sync.importer import ImportFailed
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from sync.models import ImportRun
from sync.verify import verify_archive
from tests.archive_tools import rewrite_archive
from tests.fingerprint import fingerprint

SECRET = "pbkdf2_sha256$1$salt$" + "SECRETHASH" * 20  # over the field's max_length (128)


def engine_errors() -> list[type[Exception]]:
    """The public exception classes the modules of ``sync`` define."""
    found = []
    for module in pkgutil.walk_packages(sync.__path__, "sync."):
        if ".migrations" in module.name or ".management" in module.name:
            continue
        for name, value in vars(importlib.import_module(module.name)).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.name
                and not name.startswith("_")
            ):
                found.append(value)
    return found


def test_every_engine_error_is_a_sync_error():
    errors = engine_errors()
    names = {error.__name__ for error in errors}
    assert {"ImportFailed", "ExportError", "ArchiveError", "SchemaError"} <= names
    interrupts = (KeyboardInterrupt,)  # not errors: Ctrl-C, and SIGTERM raised as it
    assert [e.__name__ for e in errors if not issubclass(e, (SyncError, *interrupts))] == []


def spoiled_user(demo, tmp_path, field, value, include_secrets=False):
    archive = export(tables=["content.User"], output_dir=tmp_path, include_secrets=include_secrets)
    sysmail = User.objects.order_by("sysmail").first().sysmail

    def edit(table, records):
        return [dict(r, **{field: value}) if r["sysmail"] == sysmail else r for r in records]

    return rewrite_archive(archive.path, tmp_path / "spoiled.tar.gz", edit), sysmail


def refusal(archive) -> ImportFailed:
    before = fingerprint("default")
    with pytest.raises(ImportFailed) as caught:
        run_import(archive, mode="replace")
    assert fingerprint("default") == before
    return caught.value


def test_a_refused_value_names_its_table_key_field_and_value(demo, tmp_path):
    archive, sysmail = spoiled_user(demo, tmp_path, "role", "x" * 21)
    error = refusal(archive)
    assert (error.table, error.key, error.field, error.value) == (
        "content.User",
        sysmail,
        "role",
        "x" * 21,
    )
    assert str(error).startswith(f"content.User {sysmail!r}: field 'role': bad value")
    assert error.as_dict()["field"] == "role"
    job = ImportRun.objects.get()
    assert job.error == str(error)
    assert job.error_detail == {"table": "content.User", "key": sysmail, "field": "role"}


def test_a_refused_secret_is_named_without_its_value(demo, tmp_path):
    archive, sysmail = spoiled_user(demo, tmp_path, "password", SECRET, include_secrets=True)
    error = refusal(archive)
    assert (error.table, error.key, error.field, error.value) == (
        "content.User",
        sysmail,
        "password",
        None,
    )
    assert "SECRETHASH" not in repr(error.as_dict())
    assert "SECRETHASH" not in repr(ImportRun.objects.get().error_detail)


def test_an_archive_line_error_names_its_member_and_line(demo, tmp_path):
    archive = export(tables=["content.Tag"], output_dir=tmp_path).path

    def edit_bytes(table, data: bytes) -> bytes:
        lines = data.split(b"\n")
        lines[1] = b"{not json"
        return b"\n".join(lines)

    broken = rewrite_archive(archive, tmp_path / "broken.tar.gz", edit_bytes=edit_bytes)
    with pytest.raises(SyncError) as caught:
        verify_archive(broken)
    assert caught.value.member.endswith("content.Tag.jsonl") and caught.value.line == 2
