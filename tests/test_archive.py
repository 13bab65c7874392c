"""The archive container on its own: writing under a temporary name, compression options, and
reading back in one forward pass. No database needed."""

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import orjson
import pytest
from django.core.checks import run_checks

from sync.archive import (
    COMPRESSIONS,
    FORMAT_NAME,
    FORMAT_VERSION,
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    WrittenArchive,
    archive_suffix,
    check_compression,
    looks_like_backup,
    numbered,
    remove_leftovers,
)

RECORDS = [{"name": "teen", "description": "Jugendliche, dospívající 🎭"}, {"name": "adult"}]


def small_index(writer: ArchiveWriter) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backup_id": "00000000-0000-0000-0000-000000000001",
        "tables": [
            {
                "model": "content.Tag",
                "member": spool.name,
                "count": spool.count,
                "size": spool.size,
                "sha256": spool.sha256.hexdigest(),
                "key_fields": ["name"],
                "fields": {"name": "CharField", "description": "TextField"},
            }
            for spool in writer.spools
        ],
    }


def write_small_archive(path, compression="gz", level=None) -> WrittenArchive:
    with ArchiveWriter(path, compression, level) as writer:
        spool = writer.add_table("content.Tag")
        for record in RECORDS:
            spool.write_line(orjson.dumps(record) + b"\n")
        return writer.finish(small_index(writer))


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_written_archive_reads_back(tmp_path, compression):
    path = tmp_path / f"x{archive_suffix(compression)}"

    written = write_small_archive(path, compression)

    assert written.path == path
    assert (written.size, written.sha256) == (
        path.stat().st_size,
        hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    with ArchiveReader(path) as reader:
        assert reader.compression == compression
        assert reader.index.backup_id.endswith("0001")
        tables = [
            (entry.label, [orjson.loads(line) for line in lines])
            for entry, lines in reader.tables()
        ]
    assert tables == [("content.Tag", RECORDS)]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no spool or partial left


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_same_content_gives_the_same_bytes(tmp_path, compression):
    first, second = tmp_path / "a", tmp_path / "b"
    write_small_archive(first, compression)
    write_small_archive(second, compression)

    assert first.read_bytes() == second.read_bytes()  # no timestamps or owners in the tar


def test_tar_members_are_plain_files_without_owner_or_time(tmp_path):
    path = tmp_path / "x.backup.tar.gz"
    write_small_archive(path)

    listing = subprocess.run(
        ["tar", "-tvzf", str(path)], check=True, capture_output=True, text=True
    ).stdout.splitlines()

    assert [line.split()[0] for line in listing] == ["-rw-r--r--"] * 2
    assert all(" 0/0 " in line and " 1970-01-01 00:00 " in line for line in listing)
    assert listing[1].endswith(" tables/001-content.Tag.jsonl")


def test_a_failure_while_writing_leaves_nothing(tmp_path):
    path = tmp_path / "x.backup.tar.gz"

    with pytest.raises(RuntimeError), ArchiveWriter(path) as writer:
        writer.add_table("content.Tag").write_line(b"{}\n")
        raise RuntimeError("the database went away")

    assert list(tmp_path.iterdir()) == []


def test_the_partial_file_does_not_look_like_a_backup(tmp_path):
    writer = ArchiveWriter(tmp_path / "20261124T213000Z-full.backup.tar.gz")

    assert writer.partial_path.name.startswith(".")
    assert not looks_like_backup(writer.partial_path.name)
    assert looks_like_backup(writer.final_path.name)


@pytest.mark.parametrize(
    ("compression", "suffix"),
    [
        ("gz", ".backup.tar.gz"),
        ("bz2", ".backup.tar.bz2"),
        ("xz", ".backup.tar.xz"),
        ("zst", ".backup.tar.zst"),
        ("none", ".backup.tar"),
    ],
)
def test_suffixes(compression, suffix):
    assert archive_suffix(compression) == suffix
    assert looks_like_backup(f"20261124T213000Z-full{suffix}")


@pytest.mark.parametrize(
    ("compression", "good", "bad"),
    [
        ("gz", (0, 9), (-1, 10)),
        ("bz2", (1, 9), (0, 10)),
        ("xz", (0, 9), (-1, 10)),
        ("zst", (1, 22), (0, 23)),
    ],
)
def test_levels(compression, good, bad):
    for level in good:
        check_compression(compression, level)
    for level in bad:
        with pytest.raises(ArchiveError, match=f"--level for {compression} must be between"):
            check_compression(compression, level)


def test_unknown_compression():
    with pytest.raises(ArchiveError, match="Unknown compression 'lz4': use one of gz, bz2"):
        check_compression("lz4", None)


def test_reader_refuses_a_missing_file(tmp_path):
    with pytest.raises(ArchiveError, match="Cannot open"), ArchiveReader(tmp_path / "nothing"):
        pass


def test_two_writers_of_one_name_keep_both_files(tmp_path):
    """Each chose the name while it was free; the second to finish takes the next one."""
    path = tmp_path / "20261124T213000Z-full.backup.tar.gz"
    first, second = ArchiveWriter(path), ArchiveWriter(path)
    assert first.partial_path != second.partial_path  # also within one process (threads)

    with first, second:
        for writer, name in ((first, "a"), (second, "b")):
            writer.add_table("content.Tag").write_line(orjson.dumps({"name": name}) + b"\n")
        written = [writer.finish(small_index(writer)) for writer in (first, second)]

    assert [w.path.name for w in written] == [path.name, "20261124T213000Z-full-2.backup.tar.gz"]
    for w, name in zip(written, ("a", "b"), strict=True):
        assert w.sha256 == hashlib.sha256(w.path.read_bytes()).hexdigest()
        with ArchiveReader(w.path) as reader:
            assert [orjson.loads(line) for _, lines in reader.tables() for line in lines] == [
                {"name": name}
            ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(w.path.name for w in written)


def test_without_hard_links_a_name_is_reserved_before_the_file_moves_onto_it(tmp_path, monkeypatch):
    """FAT and some network shares refuse os.link: the name is then created exclusively (so
    taken names are still never overwritten) and the file replaces the reservation."""
    path = tmp_path / "x.backup.tar.gz"
    path.write_bytes(b"an archive already here")

    def no_hard_links(source, target):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr("os.link", no_hard_links)
    written = write_small_archive(path)

    assert written.path.name == "x-2.backup.tar.gz"
    assert path.read_bytes() == b"an archive already here"
    assert written.sha256 == hashlib.sha256(written.path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("name", "number", "expected"),
    [
        ("20261124T213000Z-full.backup.tar.gz", 1, "20261124T213000Z-full.backup.tar.gz"),
        ("20261124T213000Z-full.backup.tar.gz", 3, "20261124T213000Z-full-3.backup.tar.gz"),
        ("20261124T213000Z-full.backup.tar", 2, "20261124T213000Z-full-2.backup.tar"),
    ],
)
def test_numbered_names(name, number, expected):
    assert numbered(Path(name), number) == Path(expected)


def test_leftovers_of_dead_writers_go_and_those_of_live_ones_stay(tmp_path):
    """Told by age: a live writer's job touches its files every second (whatever its pid)."""
    writer = ArchiveWriter(tmp_path / "20261124T213000Z-full.backup.tar.gz")
    live = writer.partial_path
    dead = tmp_path / ".20261124T213000Z-full.backup.tar.gz.999999999-0a1b2c3d.partial"
    for partial in (live, dead):
        partial.write_bytes(b"half")
    an_hour_ago = os.path.getmtime(dead) - 3600
    os.utime(dead, (an_hour_ago, an_hour_ago))

    removed = remove_leftovers(tmp_path, older_than=60)

    assert removed == [dead]
    assert live.exists()


@pytest.mark.parametrize("value", [0, -1, "64M"])
def test_a_read_limit_that_is_not_a_positive_size_is_a_system_check_error(settings, value):
    settings.SYNC_MAX_LINE_SIZE = value

    errors = [e for e in run_checks() if e.id == "sync.E002"]

    assert [e.msg for e in errors] == [
        f"SYNC_MAX_LINE_SIZE must be a positive number of bytes, not {value!r}."
    ]
