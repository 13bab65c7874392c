"""syncverify: an archive is checked without being trusted. Each bad archive is rebuilt with
Python's tarfile from the members of a good export, changed in one way."""

import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import orjson
import pytest
from django.core.management import CommandError

from sync.archive import COMPRESSIONS, ArchiveError
from sync.jobs.exports import export
from sync.verify import verify_archive
from tests.conftest import run_command

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
INDEX = "index.json"
STATUS = "tables/001-content.Status.jsonl"
TAG = "tables/003-content.Tag.jsonl"


@pytest.fixture
def good(seeded, tmp_path) -> Path:
    return export(output_dir=tmp_path / "good").path


def members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:*") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def write_archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def rebuilt(good: Path, tmp_path: Path, change=None, extra=(), drop=(), index_change=None) -> Path:
    """``good`` rewritten: members changed by ``change(name, data)``, ``drop``ped or ``extra``
    appended, and the index changed by ``index_change(index)``."""
    members = members_of(good)
    index = orjson.loads(members[INDEX])
    if index_change:
        index_change(index)
    members[INDEX] = orjson.dumps(index)
    chosen = [
        regular(name, change(name, data) if change else data)
        for name, data in members.items()
        if name not in drop
    ]
    return write_archive(tmp_path / "bad.backup.tar.gz", chosen + list(extra))


def resign(index: dict, member: str, data: bytes) -> None:
    """Make the index agree with a changed member, so that only the content check can fail."""
    entry = next(t for t in index["tables"] if t["member"] == member)
    entry["size"] = len(data)
    entry["sha256"] = hashlib.sha256(data).hexdigest()


def with_member(good: Path, tmp_path: Path, member: str, data: bytes) -> Path:
    """``good`` with ``member`` holding ``data`` and the index agreeing with it."""
    return rebuilt(
        good,
        tmp_path,
        change=lambda name, old: data if name == member else old,
        index_change=lambda index: resign(index, member, data),
    )


def flip_byte(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def test_a_good_archive_passes(good):
    out = run_command("syncverify", str(good))

    assert "OK — format v1, 12 tables, 73 records, all checksums match." in out
    assert verify_archive(good).counts["content.Status"] == 63


def test_a_rebuilt_archive_passes(good, tmp_path):
    # the rebuilding helpers alone change nothing that matters
    assert verify_archive(rebuilt(good, tmp_path)).total == 73


def expect_refusal(path: Path, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run_command("syncverify", str(path))


def test_flipped_byte_in_a_member(good, tmp_path):
    bad = rebuilt(good, tmp_path, lambda n, d: flip_byte(d, 100) if n == STATUS else d)

    expect_refusal(bad, f"Member '{STATUS}' fails its sha256 check: it was altered")


def test_flipped_byte_in_the_file(good, tmp_path):
    data = good.read_bytes()
    bad = tmp_path / "flipped.backup.tar.gz"
    bad.write_bytes(flip_byte(data, len(data) // 2))

    expect_refusal(bad, "flipped.backup.tar.gz")


@pytest.mark.parametrize("compression", [c for c in COMPRESSIONS if c != "none"])
def test_damage_anywhere_in_a_compressed_file_is_found(seeded, tmp_path, compression):
    """The compressor's own checksum covers every byte, index.json and tar padding included;
    damage is reported as an ArchiveError whatever it hits, never as a traceback."""
    data = export(output_dir=tmp_path, compression=compression).path.read_bytes()
    bad = tmp_path / "bad"
    for fraction in (0.05, 0.3, 0.5, 0.7, 0.85):
        bad.write_bytes(flip_byte(data, int(len(data) * fraction)))
        with pytest.raises(ArchiveError):
            verify_archive(bad)
    for fraction in (0.2, 0.5, 0.99):
        bad.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(ArchiveError, match="corrupt or truncated"):
            verify_archive(bad)


def test_damage_in_the_tables_of_an_uncompressed_file_is_found(seeded, tmp_path):
    good = export(output_dir=tmp_path, compression="none").path
    data = good.read_bytes()
    with tarfile.open(good) as tar:
        tables = [m for m in tar.getmembers() if m.name != INDEX and m.size]
    bad = tmp_path / "bad"
    for member in tables:
        bad.write_bytes(flip_byte(data, member.offset_data + member.size // 2))
        with pytest.raises(ArchiveError, match=member.name):
            verify_archive(bad)
        bad.write_bytes(data[: member.offset_data + member.size // 2])
        with pytest.raises(ArchiveError, match="corrupt or truncated"):
            verify_archive(bad)


def test_truncated_file(good, tmp_path):
    bad = tmp_path / "cut.backup.tar.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size * 3 // 4])

    expect_refusal(bad, "cut.backup.tar.gz is corrupt or truncated")


def test_empty_file(tmp_path):
    bad = tmp_path / "empty.backup.tar.gz"
    bad.write_bytes(b"")

    expect_refusal(bad, "empty.backup.tar.gz is corrupt or truncated")


def test_missing_member(good, tmp_path):
    expect_refusal(
        rebuilt(good, tmp_path, drop=[TAG]), f"Member '{TAG}' listed in index.json is missing"
    )


def test_extra_member(good, tmp_path):
    bad = rebuilt(good, tmp_path, extra=[regular("tables/099-extra.jsonl", b"{}\n")])

    expect_refusal(bad, "Member 'tables/099-extra.jsonl' is not listed in index.json")


def test_path_traversal_member(good, tmp_path):
    bad = rebuilt(good, tmp_path, extra=[regular("../evil", b"boo\n")])

    expect_refusal(bad, r"Unsafe member name '\.\./evil'")


def test_path_traversal_in_the_index(good, tmp_path):
    def escape(index):
        index["tables"][0]["member"] = "tables/../../evil"

    expect_refusal(rebuilt(good, tmp_path, index_change=escape), "Unsafe member name")


def test_symlink_member(good, tmp_path):
    link = tarfile.TarInfo("tables/013-content.Link.jsonl")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"

    bad = rebuilt(good, tmp_path, extra=[(link, None)])

    expect_refusal(bad, "Member 'tables/013-content.Link.jsonl' is not a regular file")


def test_unknown_format_version(good, tmp_path):
    def future(index):
        index["format_version"] = 2

    expect_refusal(
        rebuilt(good, tmp_path, index_change=future),
        "Archive format version 2 is not supported: this Crearis Sync reads version 1",
    )


def test_not_an_archive_of_ours(good, tmp_path):
    def foreign(index):
        index["format"] = "something-else"

    expect_refusal(rebuilt(good, tmp_path, index_change=foreign), "does not describe a")


def test_index_not_first(good, tmp_path):
    members = members_of(good)
    reordered = [regular(n, d) for n, d in members.items() if n != INDEX]
    bad = write_archive(
        tmp_path / "late.backup.tar.gz", [*reordered, regular(INDEX, members[INDEX])]
    )

    expect_refusal(bad, "the first member is not index.json")


def test_duplicate_member(good, tmp_path):
    again = members_of(good)[STATUS]
    bad = rebuilt(good, tmp_path, extra=[regular(STATUS, again)])

    expect_refusal(bad, f"Member '{STATUS}' appears twice")


def test_record_fields_that_do_not_match_the_index(good, tmp_path):
    lines = members_of(good)[TAG].splitlines(keepends=True)
    record = orjson.loads(lines[0])
    record["colour"] = "red"
    del record["description"]
    changed = orjson.dumps(record) + b"\n" + b"".join(lines[1:])

    bad = with_member(good, tmp_path, TAG, changed)

    expect_refusal(
        bad,
        rf"{TAG}, line 1: fields differ from the index \(extra \['colour'\], "
        r"missing \['description'\]\)",
    )


def test_record_value_of_the_wrong_type(good, tmp_path):
    lines = members_of(good)[STATUS].splitlines(keepends=True)
    record = orjson.loads(lines[1])
    record["value"] = "three"
    changed = lines[0] + orjson.dumps(record) + b"\n" + b"".join(lines[2:])

    bad = with_member(good, tmp_path, STATUS, changed)

    expect_refusal(bad, f"{STATUS}, line 2: field 'value' holds str, expected SmallIntegerField")


def test_record_that_is_not_json(good, tmp_path):
    changed = members_of(good)[TAG] + b"{not json\n"

    bad = with_member(good, tmp_path, TAG, changed)

    expect_refusal(bad, f"{TAG}, line 5: not valid JSON")


def test_record_count_that_does_not_match_the_index(good, tmp_path):
    def overcount(index):
        index["tables"][2]["count"] = 5

    expect_refusal(
        rebuilt(good, tmp_path, index_change=overcount),
        f"{TAG} holds 4 records, the index says 5",
    )


def test_member_over_the_size_limit(good, settings):
    settings.SYNC_MAX_MEMBER_SIZE = 15_000  # the index fits, the status table does not

    expect_refusal(good, rf"Member '{STATUS}' is \d+ bytes, over the limit of 15000")


def test_missing_file(tmp_path):
    expect_refusal(tmp_path / "nowhere.backup.tar.gz", "Cannot open .*nowhere.backup.tar.gz")


def test_the_real_command_exits_non_zero_on_a_corrupt_file(tmp_path):
    bad = tmp_path / "corrupt.backup.tar.gz"
    bad.write_bytes(gzip.compress(os.urandom(5000))[:1000])
    # syncverify needs no database; keep the child away from the real one anyway
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}"}

    done = subprocess.run(
        [sys.executable, "manage.py", "syncverify", str(bad)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert f"CommandError: {bad}: corrupt.backup.tar.gz is corrupt or truncated" in done.stderr
    assert "Traceback" not in done.stderr
