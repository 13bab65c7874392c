"""Export of what an import could refuse: values nested deeper than orjson writes, lines over
SYNC_MAX_LINE_SIZE, and two exports that pick one name. The same tests run in the SQLite and in
the PostgreSQL pass."""

import hashlib
import threading
import time

import pytest
from django.db import connections

from crearis.content.models import SystemConfig, Tag
from sync.jobs.exports import export
from sync.models import BackupRecord
from sync.verify import JSON_MAX_DEPTH, verify_archive
from tests.cli import assert_refused, cli
from tests.job_tools import reporter_calling

pytestmark = pytest.mark.django_db


def nested(depth: int, inner=0):
    """A JSON value ``depth`` levels deep, lists and objects in turn."""
    value = inner
    for level in range(depth):
        value = [value] if level % 2 else {"v": value}
    return value


@pytest.mark.parametrize("depth", [300, JSON_MAX_DEPTH])
def test_a_deeply_nested_json_value_round_trips_exactly(db, tmp_path, depth):
    """orjson writes at most 254 levels: deeper values are written by the standard library,
    with integers beyond 64 bits kept exact, and read back as they were."""
    value = nested(depth - 1, inner=[2**70, -(2**65), 1.5, "ü"])
    SystemConfig.objects.create(key="deep", value=value)
    archive = export(tables=["content.SystemConfig"], output_dir=tmp_path).path
    assert verify_archive(archive).total == 1
    SystemConfig.objects.filter(key="deep").update(value={})

    assert cli("syncimport", str(archive), no_input=True).status == 0

    assert SystemConfig.objects.get(key="deep").value == value


def test_a_value_nested_deeper_than_an_import_reads_is_refused_by_name(db, tmp_path):
    SystemConfig.objects.create(key="shallow", value={"a": 1})
    SystemConfig.objects.create(key="too-deep", value=nested(JSON_MAX_DEPTH + 1))

    assert_refused(
        command="syncexport",
        output=str(tmp_path),
        quiet=True,
        expected=(
            "Export failed: content.SystemConfig 'too-deep': field 'value' is nested "
            f"{JSON_MAX_DEPTH + 1} levels deep, over {JSON_MAX_DEPTH}."
        ),
    )

    assert not list(tmp_path.iterdir())  # no archive, no partial file
    assert BackupRecord.objects.get().status == BackupRecord.Status.FAILED


def test_a_line_over_the_limit_is_refused_by_name(db, tmp_path, settings):
    settings.SYNC_MAX_LINE_SIZE = 1000
    Tag.objects.create(name="small", description="x" * 500)
    Tag.objects.create(name="large", description="x" * 1000)

    assert_refused(
        command="syncexport",
        tables=["content.Tag"],
        output=str(tmp_path),
        quiet=True,
        expected="Export failed: content.Tag 'large': its line is 1",
    )
    settings.SYNC_MAX_LINE_SIZE = 2000

    assert verify_archive(export(tables=["content.Tag"], output_dir=tmp_path).path).total == 2


def exports_in_one_second(output_dir) -> list:
    """Two exports that choose their archive's name in the same second, before either has
    written it. They take turns otherwise (SQLite's in-memory test database does not wait for
    locks): the second starts once the first has chosen, and goes on writing once the first is
    done."""
    first_chose = threading.Event()
    both_chose = threading.Barrier(2, timeout=30)
    first_done = threading.Event()
    results, errors = [None, None], []

    def run(position: int) -> None:
        def chose(total: int) -> None:  # called once the name is chosen
            first_chose.set()
            both_chose.wait()

        def wait_for_the_first(count: int) -> None:
            if position == 1:
                first_done.wait(30)

        try:
            results[position] = export(
                output_dir=output_dir,
                reporter=reporter_calling(wait_for_the_first, on_total=chose),
            )
        except Exception as exc:  # reported by the caller
            errors.append(exc)
        finally:
            connections.close_all()
            first_chose.set()
            first_done.set()

    time.sleep(1 - time.time() % 1 + 0.05)  # the start of a second
    threads = [threading.Thread(target=run, args=(position,)) for position in (0, 1)]
    threads[0].start()
    first_chose.wait(30)
    threads[1].start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


def test_two_exports_in_the_same_second_keep_both_archives(transactional_db, tmp_path):
    """Each checked that its name was free before writing: neither may overwrite the other,
    and each record names its own file and checksum."""
    Tag.objects.create(name="teen")
    for attempt in range(3):  # a loaded machine may start them in different seconds
        output = tmp_path / str(attempt)
        first, second = exports_in_one_second(output)
        if first.path.name[:16] == second.path.name[:16]:  # 20261124T213000Z
            break

    assert second.path.name == first.path.name.replace("-full.", "-full-2.")
    for result in (first, second):
        backup = BackupRecord.objects.get(pk=result.backup.pk)
        assert backup.file_name == result.path.name
        assert backup.storage_path == str(result.path.resolve())
        assert backup.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
        assert verify_archive(result.path).total == 1
    assert sorted(p.name for p in output.iterdir()) == sorted([first.path.name, second.path.name])
