"""An archive larger than the memory its processes use: exported into and imported from a real
S3-compatible server (tests/s3.py) by ``manage.py`` processes of their own, whose peak memory
(resident set, children included: the import's verifying process) stays far below the
archive's size. Uncompressed, of random text, so the archive in the bucket is as large as the
data."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.s3 import S3Server
from tests.sites import ROOT, Site

ROWS = 96_000
DESCRIPTION_BYTES = 4096  # of hex: 96,000 rows are 393 MB of text
STAMP = "2026-01-02 03:04:05.000006"


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server.start()
    yield server
    server.stop()


def fill_tags(database: Path, count: int) -> None:
    """``count`` tags with DESCRIPTION_BYTES of random text each, written with plain SQL
    (fast)."""

    def rows():
        for n in range(count):
            description = os.urandom(DESCRIPTION_BYTES // 2).hex()
            yield (STAMP, STAMP, f"tag-{n:07d}", description, "{}", "{}")

    with closing(sqlite3.connect(database)) as connection, connection:
        connection.executemany(
            "INSERT INTO content_tag (created_at, updated_at, name, description, name_i18n, "
            "desc_i18n) VALUES (?, ?, ?, ?, ?, ?)",
            rows(),
        )


def tags_digest(database: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    with closing(sqlite3.connect(database)) as connection:
        for name, description in connection.execute(
            "SELECT name, description FROM content_tag ORDER BY name"
        ):
            digest.update(f"{name}\0{description}\n".encode())
            count += 1
    return count, digest.hexdigest()


def high_water_mark(pid: int) -> int:
    """The peak resident memory, in bytes, of process ``pid`` or of any of its descendants
    alive now (VmHWM: the peak of the program it runs, whatever its parent held when it
    started — unlike ``ru_maxrss``, which keeps the forking parent's size through exec: a
    pytest process grown large by earlier tests made every child look that large)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # it ended meanwhile
        return 0
    own = next((int(line.split()[1]) * 1024 for line in status.splitlines()
                if line.startswith("VmHWM:")), 0)  # fmt: skip  # 0: ended, not yet reaped
    return max([own, *(high_water_mark(int(child)) for child in children)])


def run_measured(site: Site, *args: str, watch=lambda: None) -> tuple[str, int]:
    """Run ``manage.py ARGS`` for ``site``; return its output and its peak resident memory in
    bytes (its own or a child's, whichever is higher, sampled five times a second). ``watch``
    is called while it runs."""
    process = subprocess.Popen(
        site.command(*args), cwd=ROOT, env=site.env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    peak = 0
    while process.poll() is None:
        peak = max(peak, high_water_mark(process.pid))
        assert time.monotonic() < deadline, f"{args} did not end"
        watch()
        time.sleep(0.2)
    out, err = process.stdout.read().decode(), process.stderr.read().decode()
    assert process.returncode == 0, f"{args} failed: {err}"
    assert peak > 0, f"{args} ended before its memory could be read"
    return out, peak


@dataclass
class Trip:
    """An export of a site's tags into the bucket and its import into an empty site."""

    size: int  # of the archive in the bucket
    export_peak: int
    import_peak: int
    seen_sizes: list[int]  # of the objects listed in the bucket while the export ran


def round_trip(s3_server: S3Server, folder: Path, empty: Path, rows: int) -> Trip:
    bucket = s3_server.new_bucket()
    extra = s3_server.site_env(bucket) | {"SYNC_CACHE_URL": f"filecache://{folder / 'cache'}"}
    source, target = Site.sqlite(folder / "source"), Site.sqlite(folder / "target")
    for site in (source, target):
        site.settings = extra
        site.sqlite_file.parent.mkdir(parents=True)
        shutil.copyfile(empty, site.sqlite_file)
    fill_tags(source.sqlite_file, rows)
    seen_sizes: list[int] = []

    def watch_bucket() -> None:
        for page in s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            seen_sizes.extend(o["Size"] for o in page.get("Contents", ()))

    out, export_peak = run_measured(
        source, "syncexport", "--tables", "content.Tag", "--compression", "none", "--quiet",
        watch=watch_bucket,
    )  # fmt: skip
    name = out.strip()
    size = s3_server.client().head_object(Bucket=bucket, Key=name)["ContentLength"]
    _, import_peak = run_measured(target, "syncimport", name, "--no-input", "--quiet")
    assert tags_digest(target.sqlite_file) == tags_digest(source.sqlite_file)
    return Trip(size, export_peak, import_peak, seen_sizes)


@pytest.mark.once  # its sites are SQLite files of their own
def test_an_archive_larger_than_memory_goes_through_the_bucket_with_flat_memory(
    s3_server, tmp_path
):
    empty = Site.sqlite(tmp_path / "empty")
    empty.sqlite_file.parent.mkdir()
    empty.run("migrate", "-v0")

    trip = round_trip(s3_server, tmp_path / "large", empty.sqlite_file, ROWS)

    print(
        f"archive {trip.size >> 20} MiB: peak export {trip.export_peak >> 20} MiB, "
        f"import {trip.import_peak >> 20} MiB"
    )
    assert trip.size > ROWS * DESCRIPTION_BYTES
    assert set(trip.seen_sizes) <= {trip.size}  # seen in the bucket only whole
    # Neither process ever held anything near the archive: a third of it at least stayed out
    # (the importer's own bounded maps and buffers are most of its peak: docs/performance.md)
    assert trip.export_peak < trip.size * 2 / 3
    assert trip.import_peak < trip.size * 2 / 3
