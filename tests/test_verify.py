"""syncverify: an archive is checked without being trusted. Each bad archive is rebuilt with
Python's tarfile from the members of a good export, changed in one way."""

import gzip
import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from django.core.management import CommandError

from crearis.content.models import Event, Tag
from sync.archive import COMPRESSIONS, ArchiveError
from sync.jobs.exports import export
from sync.models import ImportRun
from sync.verify import verify_archive, verify_lines
from tests import hostile
from tests.archive_tools import rewrite_archive
from tests.cli import assert_refused
from tests.conftest import run_command
from tests.hostile import Part, members_of, write_tar
from tests.workers import sending_to

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
INDEX = "index.json"
STATUS = "tables/001-content.Status.jsonl"
TAG = "tables/003-content.Tag.jsonl"


@pytest.fixture
def good(seeded, tmp_path) -> Path:
    return export(output_dir=tmp_path / "good").path


def rebuilt(good: Path, tmp_path: Path, change=None, extra=(), drop=(), index_change=None):
    return hostile.rebuilt(good, tmp_path / "bad.backup.tar.gz", change, extra, drop, index_change)


def with_member(good: Path, tmp_path: Path, member: str, data: bytes) -> Path:
    return hostile.with_member(good, tmp_path / "bad.backup.tar.gz", member, data)


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
    # Python's bz2 and lzma readers skipped bytes after the stream, zstandard's took a frame
    # cut inside its checksum (or the tar padding) for a whole one.
    for cut_or_added in (data[:-3], data + b"hidden", data + SKIPPABLE_FRAME):
        bad.write_bytes(cut_or_added)
        with pytest.raises(ArchiveError, match="corrupt or truncated"):
            verify_archive(bad)


# A zstd skippable frame: data beside the stream's, which zstd's tools pass over.
SKIPPABLE_FRAME = b"\x50\x2a\x4d\x18" + (6).to_bytes(4, "little") + b"hidden"


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
    bad = rebuilt(good, tmp_path, extra=[Part("tables/099-extra.jsonl", b"{}\n")])

    expect_refusal(bad, "Member 'tables/099-extra.jsonl' is not listed in index.json")


def test_path_traversal_member(good, tmp_path):
    bad = rebuilt(good, tmp_path, extra=[Part("../evil", b"boo\n")])

    expect_refusal(bad, r"Unsafe member name '\.\./evil'")


def test_path_traversal_in_the_index(good, tmp_path):
    def escape(index):
        index["tables"][0]["member"] = "tables/../../evil"

    expect_refusal(rebuilt(good, tmp_path, index_change=escape), "Unsafe member name")


def test_symlink_member(good, tmp_path):
    link = Part("tables/013-content.Link.jsonl", type=tarfile.SYMTYPE, linkname="/etc/passwd")

    bad = rebuilt(good, tmp_path, extra=[link])

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
    reordered = [Part(n, d) for n, d in members.items() if n != INDEX]
    bad = write_tar(tmp_path / "late.backup.tar.gz", [*reordered, Part(INDEX, members[INDEX])])

    expect_refusal(bad, "the first member is not index.json")


def test_duplicate_member(good, tmp_path):
    again = members_of(good)[STATUS]
    bad = rebuilt(good, tmp_path, extra=[Part(STATUS, again)])

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


# -- hostile archives: refused by syncverify and by syncimport, before any write ----------------


@pytest.fixture
def exported(good) -> Path:
    """``good``, and a database an import of it would change (unless refused)."""
    Tag.objects.update(description="changed since the export")
    return good


def refused_by_both(archive: Path, expected: str, **import_options) -> None:
    """syncverify and syncimport refuse ``archive`` with one line holding ``expected`` and no
    traceback; the database is as it was and no import is left 'running'."""
    assert_refused(str(archive), expected=expected, command="syncverify")
    assert_refused(
        str(archive), expected=expected, command="syncimport", no_input=True, **import_options
    )
    assert not ImportRun.objects.filter(status=ImportRun.Status.RUNNING).exists()


def first_table(change: dict):
    return lambda index: index["tables"][0].update(change)


@pytest.mark.parametrize(
    ("index_change", "expected"),
    [
        (
            lambda i: i.update(backup_id="not-a-uuid"),
            "'backup_id' must be a UUID, not \"not-a-uuid\"",
        ),
        (lambda i: i.update(backup_id=17), "'backup_id' must be a UUID, not 17"),
        (lambda i: i.pop("backup_id"), "'backup_id' must be a UUID, not missing"),
        (
            first_table({"member": 5}),
            "table 1 (content.Status): 'member' must be a member name, not 5",
        ),
        (
            first_table({"member": "index.json"}),
            "'member' must be a member name, not \"index.json\"",
        ),
        (first_table({"model": ["content.Status"]}), "table 1: 'model' must be a model label"),
        (first_table({"model": "Status"}), "'model' must be a model label such as"),
        (first_table({"count": "63"}), "'count' must be a non-negative integer, not \"63\""),
        (first_table({"count": True}), "'count' must be a non-negative integer, not true"),
        (first_table({"count": -1}), "'count' must be a non-negative integer, not -1"),
        (first_table({"size": 20.5}), "'size' must be a non-negative integer, not 20.5"),
        (first_table({"sha256": "abc"}), "'sha256' must be 64 hex digits, not \"abc\""),
        (first_table({"sha256": None}), "'sha256' must be 64 hex digits, not null"),
        (first_table({"key_fields": "name"}), "'key_fields' must be a non-empty list of field"),
        (first_table({"key_fields": [1]}), "'key_fields' must be a non-empty list of field"),
        (first_table({"key_fields": []}), "'key_fields' must be a non-empty list of field"),
        (first_table({"key_fields": ["nope"]}), "key field 'nope' is not in 'fields'"),
        (first_table({"fields": ["name"]}), "'fields' must be an object of field names and types"),
        (first_table({"fields": {"name": 1}}), "'fields' must be an object of field names and"),
        (first_table({"references": []}), "'references' must be an object of field names and"),
        (first_table({"references": {"x": 1}}), "'references' must be an object of field names"),
        (first_table({"db_table": 5}), "'db_table' must be a text, not 5"),
        (lambda i: i["tables"].insert(0, "content.Status"), "index.json: table 1 is not an object"),
        (lambda i: i.update(tables={}), "index.json has no table list"),
        (
            lambda i: i["tables"][1].update(model=i["tables"][0]["model"]),
            "index.json lists the model 'content.Status' twice",
        ),
        (lambda i: i.update(source="sqlite"), "'source' must be an object, not \"sqlite\""),
        (lambda i: i.update(include_secrets="no"), "'include_secrets' must be true or false"),
        (lambda i: i.update(total_records="73"), "'total_records' must be a non-negative integer"),
        (lambda i: i.update(format_version=True), "Archive format version true is not supported"),
        (lambda i: b"[]", "index.json does not describe a crearis-sync-archive archive"),
        (lambda i: b"{", "index.json is not valid JSON"),
        (
            lambda i: orjson.dumps(i)[:-1] + b',"format_version":1}',
            "index.json gives 'format_version' twice in one JSON object",
        ),
        (
            lambda i: orjson.dumps(i)[:-1] + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}",
            "index.json is nested too deep",
        ),
    ],
)
def test_a_malformed_index_is_refused(exported, tmp_path, index_change, expected):
    refused_by_both(rebuilt(exported, tmp_path, index_change=index_change), expected)


@pytest.fixture
def demo_exported(demo, tmp_path) -> Path:
    """An export of the demo data, and a database an import of it would change."""
    path = export(output_dir=tmp_path / "demo").path
    Tag.objects.update(description="changed since the export")
    return path


def deep_list(depth: int) -> list:
    value = ["x"]
    for _ in range(depth - 1):
        value = [value]
    return value


def first_event_with(field: str, value) -> Callable:
    def edit(label: str, records: list[dict]) -> list[dict]:
        if label == "content.Event":
            records[0][field] = value
        return records

    return edit


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("project", {"domaincode": "proj00000"}, "'project' holds an object, expected a sync key"),
        ("project", [], "'project' holds a list, expected a sync key or null"),
        ("status", [["released", "events"]], "'status' holds a list, expected a sync key or null"),
        ("status", [{"name": "released"}, "events"], "'status' holds a list with an object in it"),
        ("status", ["released"], "'status' holds a list, expected a sync key or null"),
        ("tags", [{"name": "teen"}], "'tags': an item of its list is an object, not a sync key"),
        ("tags", [["teen", {"x": 1}]], "'tags': an item of its list is a list with an object"),
        ("tags", [["teen", deep_list(17)]], "'tags': an item of its list is a list, not a sync"),
        ("tags", [None], "'tags': an item of its list is null, not a sync key"),
        ("tags", {"teen": 1}, "'tags' holds dict, expected ManyToManyField"),
        ("tags", None, "'tags' holds null, expected a list of sync keys"),  # was: no tags
    ],
    ids=lambda v: orjson.dumps(v).decode() if not isinstance(v, str) else v[:20],
)
def test_a_record_of_a_hostile_shape_is_refused(demo_exported, tmp_path, field, value, expected):
    bad = rewrite_archive(
        demo_exported, tmp_path / "bad.backup.tar.gz", first_event_with(field, value)
    )

    refused_by_both(bad, f"tables/009-content.Event.jsonl, line 1: field {expected}")


def with_first_event_line(exported: Path, tmp_path: Path, change: Callable) -> Path:
    """``exported`` with the first line of its event table changed by ``change(line)``."""

    def edit_bytes(label: str, data: bytes) -> bytes:
        if label != "content.Event":
            return data
        first, rest = data.split(b"\n", 1)
        return change(first) + b"\n" + rest

    return rewrite_archive(exported, tmp_path / "bad.backup.tar.gz", edit_bytes=edit_bytes)


@pytest.mark.parametrize("mode", ["update", "replace"])
def test_a_field_given_twice_is_refused(demo_exported, tmp_path, mode):
    """A parser keeps one of the two values, the update's fast path reads the other: the
    import matched the event by its first xmlid and wrote the second, renaming it."""
    first = Event.objects.order_by("pk").first()
    Event.objects.filter(pk=first.pk).update(updated_at=datetime(2000, 1, 1, tzinfo=UTC))
    bad = with_first_event_line(
        demo_exported, tmp_path, lambda line: line[:-1] + b',"xmlid":"renamed"}'
    )

    refused_by_both(bad, "line 1: 'xmlid' appears twice in one JSON object", mode=mode)


def test_a_name_given_twice_inside_a_json_value_is_refused():
    lines = [b'{"key":"a","value":{"x":1}}\n', b'{"key":"b","value":{"x":1,"x":2}}\n']

    with pytest.raises(ArchiveError, match=r"m\.jsonl, line 2: 'x' appears twice in one JSON"):
        verify_lines("m.jsonl", {"key": "CharField", "value": "JSONField"}, lines)


def test_lines_written_in_another_json_style_pass(demo_exported, tmp_path):
    """Spaces and escapes do not round-trip through orjson: such lines are checked the slow
    way, and pass when no name is repeated."""
    spaced = with_first_event_line(
        demo_exported,
        tmp_path,
        lambda line: orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2).replace(
            b"\n", b" "
        ),
    )

    assert verify_archive(spaced).total == verify_archive(demo_exported).total


def test_a_json_value_nested_too_deep_is_refused(exported, tmp_path):
    """orjson parses up to 1024 levels; the import's code handles what verification lets
    through, at most JSON_MAX_DEPTH (a record nested 1,000 deep crashed the import)."""
    deep = b"[" * 1000 + b"0" + b"]" * 1000

    def edit_bytes(label: str, data: bytes) -> bytes:
        if label != "content.SystemConfig":
            return data
        first, rest = data.split(b"\n", 1)
        record = orjson.loads(first)
        record["value"] = "DEEP"
        return orjson.dumps(record).replace(b'"DEEP"', deep) + b"\n" + rest

    bad = rewrite_archive(exported, tmp_path / "bad.backup.tar.gz", edit_bytes=edit_bytes)

    refused_by_both(bad, "line 1: field 'value' is nested 1000 levels deep, over 500")


def test_a_json_value_nested_deeper_than_the_parser_reads_is_refused(exported, tmp_path):
    too_deep = b"[" * 1100 + b"]" * 1100

    bad = with_member(exported, tmp_path, TAG, too_deep + b"\n")

    refused_by_both(bad, f"{TAG}, line 1: not valid JSON (depth limit exceeded")


def test_a_line_over_the_line_limit_is_refused(exported, settings):
    settings.SYNC_MAX_LINE_SIZE = 200  # the status lines are longer

    refused_by_both(
        exported, f"{STATUS}, line 1: longer than 200 bytes, the limit for a record (SYNC_MAX_"
    )


def tar_bytes(parts: list[Part]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for part in parts:
            tar.addfile(part.info(), part.stream())
    return buffer.getvalue()


@pytest.mark.parametrize("trailer", [bytes(2 * 1024 * 1024), b"hidden"], ids=["zeros", "data"])
def test_data_after_the_end_of_the_tar_is_refused(exported, tmp_path, trailer):
    """Beyond the end-of-archive blocks only the padding of the last record may follow: more
    is not an archive of ours, and reading it could take as long as its maker wanted."""
    members = members_of(exported)
    data = tar_bytes([Part(name, content) for name, content in members.items()])
    bad = tmp_path / "trailer.backup.tar.gz"
    bad.write_bytes(gzip.compress(data + trailer))

    refused_by_both(bad, "trailer.backup.tar.gz has data after the end of its tar archive")


def test_a_damaged_tar_header_after_the_last_member_is_refused(exported, tmp_path):
    """tarfile takes a header it cannot read for the end of the archive: a block of anything
    after the last member passed for padding."""
    data = tar_bytes([Part(name, content) for name, content in members_of(exported).items()])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.getmembers()
        end = tar.offset  # after the last member's data, before the end-of-archive blocks
    bad = tmp_path / "junk.backup.tar.gz"
    bad.write_bytes(gzip.compress(data[:end] + b"hidden".ljust(512, b"!") + bytes(10240)))

    refused_by_both(bad, "junk.backup.tar.gz is corrupt or truncated (a damaged tar header")


def test_a_member_larger_than_its_index_says_is_refused_before_it_is_read(exported, tmp_path):
    bomb = hostile.with_bomb(exported, tmp_path / "bomb.backup.tar.gz", TAG, 64 * 1024**2, 1034)

    refused_by_both(bomb, f"Member '{TAG}' is 67108864 bytes, the index says 1034")


def test_an_oversized_extended_header_is_refused(exported, tmp_path):
    """tarfile reads a pax header whole into memory: it may be at most 1 MiB."""
    huge = Part("tables/099-x.jsonl", b"", pax={"comment": "x" * (2 * 1024 * 1024)})

    bad = rebuilt(exported, tmp_path, extra=[huge])

    refused_by_both(bad, "A tar extended header is 2097")


@pytest.mark.parametrize(
    "part",
    [
        Part(STATUS, type=tarfile.GNUTYPE_SPARSE, size=0),
        Part(
            STATUS,
            pax={"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "9"},
        ),
        Part(STATUS, type=tarfile.CONTTYPE),
    ],
    ids=["gnu-sparse", "pax-sparse", "contiguous"],
)
def test_members_that_are_not_plain_files_are_refused(exported, tmp_path, part):
    """A sparse member's map is read for as long as it goes on; an export never writes one."""
    bad = rebuilt(exported, tmp_path, drop=[STATUS], extra=[part])

    refused_by_both(bad, f"Member '{STATUS}' is not a regular file")


@contextmanager
def deadline(seconds: int):
    """Fail a test that would hang (a FIFO's opening waits for a writer, forever)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (os.mkfifo, "a FIFO (named pipe)"),
        (os.mkdir, "a directory"),
        (lambda path: os.symlink("/dev/zero", path), "a character device"),
    ],
    ids=["fifo", "directory", "dev-zero"],
)
def test_an_archive_path_that_is_not_a_regular_file_is_refused_at_once(
    exported, tmp_path, make, kind
):
    path = tmp_path / "odd.backup.tar.gz"
    make(path)

    with deadline(20):
        refused_by_both(path, f"odd.backup.tar.gz is {kind}, not an archive file")
        assert_refused(str(path), expected=f"is {kind}, not", command="syncinspect")


# -- bounded work: in a process of its own, as users run it ------------------------------------


@pytest.fixture(scope="module")
def child_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a manage.py child with a migrated SQLite database of its own."""
    database = tmp_path_factory.mktemp("child") / "db.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "DJANGO_SETTINGS_MODULE": "crearis.settings",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    return env


def run_measured(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[int, str, int]:
    """(exit status, stderr, peak RSS in KiB) of ``manage.py ARGS``, the checker process it
    starts included (``wait4`` reports the largest of a process and the children it waited
    for)."""
    errors = tmp_path / "stderr.txt"
    with open(errors, "wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        timer = threading.Timer(120, child.kill)
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)
        timer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, errors.read_text(), usage.ru_maxrss


BOMB_SIZE = 128 * 1024 * 1024


@pytest.mark.parametrize("command", ["syncverify", "syncimport"])
def test_a_compressed_bomb_is_refused_with_flat_memory(good, tmp_path, child_env, command):
    """128 MiB of zeros without a newline, an eighth of a megabyte compressed: read without a
    bound, its one line alone takes 128 MiB. With a 1 MiB line limit it is refused after
    reading 1 MiB, in the memory a small archive takes."""
    bomb = hostile.with_bomb(good, tmp_path / "bomb.backup.tar.gz", TAG, BOMB_SIZE)
    assert bomb.stat().st_size < BOMB_SIZE / 500
    env = {**child_env, "SYNC_MAX_LINE_SIZE": str(1024 * 1024)}
    args = [command, "--no-input"] if command == "syncimport" else [command]

    status, errors, small_peak = run_measured([*args, str(good)], env, tmp_path)
    assert status == 0, errors
    started = time.monotonic()
    status, errors, bomb_peak = run_measured([*args, str(bomb)], env, tmp_path)
    seconds = time.monotonic() - started

    assert status == 1
    assert "Traceback" not in errors
    assert f"{TAG}, line 1: longer than 1048576 bytes" in errors
    assert bomb_peak < small_peak + 32 * 1024, (bomb_peak, small_peak)  # KiB
    assert seconds < 30


def test_a_long_line_is_refused_in_the_memory_of_its_limit(good, tmp_path, child_env):
    """A 200 MB record line was taken whole (665 MB resident); over the limit, a line (here
    100 MB) is refused before it is all read."""
    line = b'{"name":"' + b"x" * (100 * 1000 * 1000) + b'"}\n'
    long_line = hostile.with_member(good, tmp_path / "long.backup.tar.gz", TAG, line)
    del line
    env = {**child_env, "SYNC_MAX_LINE_SIZE": str(4 * 1024 * 1024)}

    status, errors, small_peak = run_measured(["syncverify", str(good)], env, tmp_path)
    status, errors, peak = run_measured(["syncverify", str(long_line)], env, tmp_path)

    assert status == 1
    assert f"{TAG}, line 1: longer than 4194304 bytes" in errors
    assert peak < small_peak + 32 * 1024, (peak, small_peak)


def slow_archive(path: Path, lines: int) -> Path:
    """A valid archive whose check takes seconds: a million tags written with spaces, each line
    checked the slow way (see sync.verify.repeated_name)."""
    record = {
        "name": "NAME",
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        "description": "",
        "name_i18n": {},
        "desc_i18n": {},
    }
    spaced = orjson.dumps(record, option=orjson.OPT_INDENT_2).replace(b"\n", b" ")
    prefix, suffix = spaced.split(b"NAME")
    data = b"".join(b"%st%d%s\n" % (prefix, n, suffix) for n in range(lines))
    fields = dict.fromkeys(record, "JSONField") | {"name": "CharField", "description": "TextField"}
    fields |= {"created_at": "DateTimeField", "updated_at": "DateTimeField"}
    table = {
        "model": "content.Tag",
        "member": "tables/001-content.Tag.jsonl",
        "count": lines,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "key_fields": ["name"],
        "fields": fields,
    }
    index = {
        "format": "crearis-sync-archive",
        "format_version": 1,
        "backup_id": "00000000-0000-4000-8000-000000000001",
        "tables": [table],
    }
    return write_tar(path, [hostile.index_part(index), Part(table["member"], data)], level=1)


def children_of(pid: int) -> dict[int, bytes]:
    """Process id → command line of the processes whose parent is ``pid``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (whoever reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition: Callable[[], object], seconds: float) -> object:
    end = time.monotonic() + seconds
    while not (result := condition()) and time.monotonic() < end:
        time.sleep(0.05)
    return result


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_archive_checker_ends_with_a_killed_import(tmp_path, child_env):
    archive = slow_archive(tmp_path / "slow.backup.tar.gz", 1_500_000)  # ≈ 10 s to check
    importer = subprocess.Popen(
        [sys.executable, "manage.py", "syncimport", str(archive), "--no-input"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checker = None
    try:
        checkers = wait_for(
            lambda: [p for p, cmd in children_of(importer.pid).items() if b"sync.verify" in cmd],
            60,
        )
        assert checkers, "the import started no checker"
        checker = checkers[0]
        time.sleep(1)  # reading the archive
        assert running(checker)

        importer.send_signal(signal.SIGKILL)
        importer.wait()

        assert wait_for(lambda: not running(checker), 3), "the checker outlived its import"
    finally:
        importer.kill()
        importer.wait()
        if checker is not None and running(checker):
            os.kill(checker, signal.SIGKILL)


def test_a_ctrl_c_at_the_terminal_does_not_reach_the_archive_check(tmp_path):
    """The check runs in a process group of its own: SIGINT to the import's group (a Ctrl-C)
    cannot kill it while its interpreter starts, before it ignores SIGINT (the import then
    failed with "the archive check did not finish" instead of "interrupted"); the import
    stops it."""
    from sync.verify import VerifyProcess

    archive = tmp_path / "none.tar"
    archive.write_bytes(b"")
    checker = VerifyProcess(archive)
    try:
        assert os.getpgid(checker.process.pid) != os.getpgid(0)
    finally:
        checker.stop()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("odd\x00.backup.tar.gz", "is not a file name: it holds a NUL character."),
        ("/", "/ is a directory, not an archive file."),
    ],
    ids=["nul-character", "root"],
)
@pytest.mark.parametrize("command", ["syncverify", "syncinspect", "syncimport", "--async"])
def test_an_archive_path_no_file_can_have_is_refused_in_one_line(exported, command, path, expected):
    """No shell passes a NUL character, but a script (call_command) can: before, the os calls
    raised ValueError ("embedded null byte"), a traceback."""
    if command != "--async":
        options = {"no_input": True} if command == "syncimport" else {}
        assert_refused(path, expected=expected, command=command, **options)
        return
    if path == "/":
        expected = "There is no archive at /."  # --async looks for a file to hand over
    with sending_to("redis://127.0.0.1:1/0"):  # refused before a job exists: none is sent
        assert_refused(path, expected=expected, in_background=True, no_input=True)
    assert not ImportRun.objects.exists()
