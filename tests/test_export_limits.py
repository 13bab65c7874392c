"""Exports that could lose or break an archive: two that pick one name. The same tests run in
the SQLite and in the PostgreSQL pass."""

import hashlib
import threading
import time

import pytest
from django.db import connections

from crearis.content.models import Tag
from sync.exporter import export
from sync.models import BackupRecord
from sync.verify import verify_archive

pytestmark = pytest.mark.django_db


def exports_in_one_second(output_dir) -> list:
    """Two exports that choose their archive's name in the same second, before either has
    written it; the second goes on only when the first is done (so that SQLite's in-memory
    test database, which does not wait for locks, sees one writer at a time)."""
    both_chose = threading.Barrier(2, timeout=30)
    first_done = threading.Event()
    results, errors = [None, None], []

    def run(position: int) -> None:
        def wait_for_the_first(count: int) -> None:
            if position == 1:
                first_done.wait(30)

        try:
            results[position] = export(
                output_dir=output_dir,
                on_start=lambda total: both_chose.wait(),  # the name is chosen by then
                progress=wait_for_the_first,
            )
        except Exception as exc:  # reported by the caller
            errors.append(exc)
        finally:
            connections.close_all()
            first_done.set()

    time.sleep(1 - time.time() % 1 + 0.05)  # the start of a second
    threads = [threading.Thread(target=run, args=(position,)) for position in (0, 1)]
    for thread in threads:
        thread.start()
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
