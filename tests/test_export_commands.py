"""syncexport, syncinspect and syncverify as a user runs them: real archives on disk, read by
the system's own tar and decompressors."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from django.core.management import CommandError
from django.db import connection

from crearis.content.models import Event, User
from sync.archive import COMPRESSIONS
from sync.models import BackupRecord
from tests.conftest import run_command

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
CONTENT_MEMBERS = [
    f"tables/{n:03d}-content.{model}.jsonl"
    for n, model in enumerate(
        ["Status", "SystemConfig", "Tag", "Instructor", "User", "Project", "Image", "Location",
         "Event", "EventInstructor", "Participant", "Post"],
        start=1,
    )
]  # fmt: skip
SYSTEM_TOOL = {
    "gz": ["gzip", "-t"],
    "bz2": ["bzip2", "-t"],
    "xz": ["xz", "-t"],
    "zst": ["zstd", "-q", "-t"],
}


def export_quietly(tmp_path: Path, *args: str) -> Path:
    out = run_command("syncexport", *args, "--output", str(tmp_path), "--quiet")
    return Path(out.strip())


def system(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_every_compression_is_read_by_system_tar(demo, tmp_path, compression):
    path = export_quietly(tmp_path, "--compression", compression)

    suffix = "" if compression == "none" else f".{compression}"
    assert re.fullmatch(rf"\d{{8}}T\d{{6}}Z-full\.backup\.tar{re.escape(suffix)}", path.name)
    tar = ["tar", "--zstd"] if compression == "zst" else ["tar"]
    assert system(*tar, "-tf", str(path)).split() == ["index.json", *CONTENT_MEMBERS]
    index = orjson.loads(system(*tar, "-xOf", str(path), "index.json"))
    assert (index["format"], index["format_version"]) == ("crearis-sync-archive", 1)
    assert index["compression"] == compression
    events = system(*tar, "-xOf", str(path), CONTENT_MEMBERS[8]).splitlines()
    assert len(events) == Event.objects.count()
    if compression in SYSTEM_TOOL:
        system(*SYSTEM_TOOL[compression], str(path))  # the decompressor's own integrity check


def test_zstd_archive_through_a_pipe(demo, tmp_path):
    path = export_quietly(tmp_path, "--compression", "zst", "--level", "19")

    listing = subprocess.run(
        f"zstd -dc '{path}' | tar -t", shell=True, check=True, capture_output=True, text=True
    ).stdout
    assert listing.split()[0] == "index.json"


@pytest.mark.parametrize(
    ("compression", "level", "message"),
    [
        ("gz", "10", "--level for gz must be between 0 and 9"),
        ("bz2", "0", "--level for bz2 must be between 1 and 9"),
        ("xz", "-1", "--level for xz must be between 0 and 9"),
        ("zst", "23", "--level for zst must be between 1 and 22"),
    ],
)
def test_level_out_of_range(demo, tmp_path, compression, level, message):
    with pytest.raises(CommandError, match=message):
        run_command(
            "syncexport", "--compression", compression, "--level", level, "--output", str(tmp_path)
        )

    assert list(tmp_path.iterdir()) == []
    assert not BackupRecord.objects.exists()


def test_unknown_compression(db):
    with pytest.raises(CommandError, match="invalid choice: 'lz4'"):
        run_command("syncexport", "--compression", "lz4")


def test_export_reports_what_it_wrote(demo, tmp_path):
    out = run_command("syncexport", "--output", str(tmp_path))

    path = Path(out.splitlines()[0])
    assert path.parent == tmp_path and path.exists()
    assert "  content.Event: 12 records" in out
    total = BackupRecord.objects.get().total_records
    assert f"Exported {total} records from 12 tables ({path.stat().st_size} bytes, gz)." in out


def test_export_goes_to_backup_dir_by_default(demo, tmp_path, settings):
    settings.BACKUP_DIR = tmp_path / "backups"

    path = Path(run_command("syncexport", "--quiet").strip())

    assert path.parent == tmp_path / "backups"


def test_selected_tables(demo, tmp_path):
    out = run_command("syncexport", "--tables", "events", "content_tag", "--output", str(tmp_path))

    assert set(re.findall(r"  (\S+): \d+ records", out)) == {"content.Tag", "content.Event"}


def test_selected_tables_with_dependencies_and_exclusions(demo, tmp_path):
    out = run_command(
        "syncexport",
        *("--tables", "content.Event", "--with-dependencies"),
        *("--exclude", "auth", "contenttypes"),
        *("--output", str(tmp_path)),
    )

    written = set(re.findall(r"  (\S+): \d+ records", out))
    names = ["Event", "Project", "Status", "User", "Location", "Instructor", "Image", "Tag"]
    assert written == {f"content.{name}" for name in names}


@pytest.mark.parametrize("option", ["--tables", "--exclude"])
def test_unknown_table_is_named(db, tmp_path, option):
    with pytest.raises(CommandError, match=r"Export failed: Unknown table 'evnts'"):
        run_command("syncexport", option, "evnts", "--output", str(tmp_path))

    assert not BackupRecord.objects.exists()


def test_unknown_database_alias(db, tmp_path):
    with pytest.raises(CommandError, match="Unknown database alias 'nowhere'"):
        run_command("syncexport", "--database", "nowhere", "--output", str(tmp_path))
    with pytest.raises(CommandError, match="Unknown database alias 'nowhere'"):
        run_command("syncinspect", "--database", "nowhere")


def test_include_secrets(demo, tmp_path):
    User.objects.update(password="secret-hash")
    plain = export_quietly(tmp_path)
    secret = export_quietly(tmp_path, "--include-secrets")

    assert "secret-hash" not in system("tar", "-xOf", str(plain), CONTENT_MEMBERS[4])
    assert "secret-hash" in system("tar", "-xOf", str(secret), CONTENT_MEMBERS[4])


def test_a_database_error_is_a_command_error(participant_table_dropped, tmp_path):
    with pytest.raises(CommandError, match="Export failed reading the 'default' database"):
        run_command("syncexport", "--output", str(tmp_path))

    assert list(tmp_path.iterdir()) == []
    assert BackupRecord.objects.get().status == BackupRecord.Status.FAILED


# -- syncinspect -------------------------------------------------------------------------------


def test_inspect_shows_the_index(demo, tmp_path):
    path = export_quietly(tmp_path)

    out = run_command("syncinspect", str(path))

    assert f"Archive:   {path}" in out
    assert "Format:    crearis-sync-archive v1" in out
    assert f"Source:    {connection.vendor} " in out
    assert re.search(r"^content\.Event\s+12\s+\d+\s+xmlid$", out, re.M)
    assert re.search(r"^content\.EventInstructor\s+\d+\s+\d+\s+event\+instructor$", out, re.M)
    total = BackupRecord.objects.get().total_records
    assert re.search(rf"^total\s+{total}\s+\d+$", out, re.M)


def test_inspect_json_is_the_index(demo, tmp_path):
    path = export_quietly(tmp_path)

    index = orjson.loads(run_command("syncinspect", str(path), "--json"))

    assert index == orjson.loads(system("tar", "-xOf", str(path), "index.json"))


def test_inspect_refuses_a_file_that_is_not_an_archive(tmp_path):
    bad = tmp_path / "notes.backup.tar.gz"
    bad.write_text("hello")

    with pytest.raises(CommandError, match=r"notes\.backup\.tar\.gz"):
        run_command("syncinspect", str(bad))


def test_inspect_lists_backups(demo, tmp_path):
    assert run_command("syncinspect").strip() == "No backups recorded."
    path = export_quietly(tmp_path)

    out = run_command("syncinspect")
    rows = orjson.loads(run_command("syncinspect", "--json"))

    assert re.search(rf"succeeded\s+\d+ rec\s+{re.escape(path.name)}$", out, re.M)
    assert [(r["file_name"], r["status"]) for r in rows] == [(path.name, "succeeded")]


# -- an export killed for real ------------------------------------------------------------------


@pytest.mark.once  # a SQLite site of its own, whatever the test database
def test_killed_export_leaves_no_archive_and_a_stale_record(tmp_path):
    """SIGKILL: nothing can clean up. The record turns stale once the heartbeat is older than
    SYNC_JOB_STALE_AFTER, and the next export marks it failed and removes the spool files."""
    backups = tmp_path / "backups"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("SYNC_EXTRA_DATABASES",)},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'site.sqlite3'}",
        "BACKUP_DIR": str(backups),
        "SYNC_CACHE_URL": f"filecache://{tmp_path / 'cache'}",
        "SYNC_JOB_STALE_AFTER": "3",
    }

    def manage(*args: str, **more_env: str) -> str:
        command = [sys.executable, "manage.py", *args]
        done = subprocess.run(
            command,
            cwd=ROOT,
            env={**env, **more_env},
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stdout

    manage("migrate", "-v0")
    manage("syncseed")
    manage("syncdemo", "--events", "3000")
    exporting = subprocess.Popen(
        [sys.executable, "manage.py", "syncexport", "--compression", "xz"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(backups.glob(".*")) and exporting.poll() is None:
            assert time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.05)
        time.sleep(1.5)  # well into the tables
        assert exporting.poll() is None, "the export finished before it could be killed"
    finally:
        exporting.send_signal(signal.SIGKILL)
        exporting.wait()

    assert not [p for p in backups.iterdir() if p.name.endswith(".backup.tar.xz")]
    # Staleness is the reader's judgement: one that allows a minute still sees it running,
    # however slowly this (busy) machine starts the command.
    listed = orjson.loads(manage("syncinspect", "--json", SYNC_JOB_STALE_AFTER="60"))
    assert [r["status"] for r in listed] == ["running"]
    time.sleep(3.5)  # the heartbeat grows older than SYNC_JOB_STALE_AFTER
    out = manage("syncinspect")
    assert re.search(r"stale\s+0 rec\s+\S+-full\.backup\.tar\.xz \(left running by a process", out)
    rows = orjson.loads(manage("syncinspect", "--json"))
    assert [r["status"] for r in rows] == ["stale"]
    assert [p.name for p in backups.iterdir() if p.name.startswith(".sync-spool-")]

    manage("syncexport", "--tables", "content.Tag", "--compression", "none")

    rows = orjson.loads(manage("syncinspect", "--json"))
    assert [r["status"] for r in rows] == ["succeeded", "failed"]
    assert rows[1]["error"].startswith("Stale: no heartbeat since")
    assert [p.suffix for p in backups.iterdir()] == [".tar"]  # the leftovers are gone


def test_a_model_that_cannot_be_keyed_is_a_command_error(demo, tmp_path, settings):
    settings.SYNC_KEYS = {"content.Project": ["regio"]}  # a key that refers to its own table

    with pytest.raises(CommandError, match=r"content\.Project: its sync key refers back to itself"):
        run_command("syncexport", "--tables", "content.Project", "--output", str(tmp_path))

    assert list(tmp_path.iterdir()) == []
