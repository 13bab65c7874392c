"""Export's ``kind`` and its per-table filter hook (``sync.exporter.TableFilter``)."""

from __future__ import annotations

import pytest

from crearis.content.models import Event, Tag
from sync.exporter import ExportError
from sync.jobs.exports import export
from sync.models import BackupRecord
from sync.verify import verify_archive
from tests.archive_tools import read_records


def test_a_table_filter_limits_the_records_written_and_the_index_counts_them(demo, tmp_path):
    kept = set(Event.objects.order_by("xmlid").values_list("xmlid", flat=True)[:2])
    assert Event.objects.count() > len(kept)

    def only_kept_events(plan, rows):
        return rows.filter(xmlid__in=kept) if plan.model is Event else rows

    result = export(
        tables=["content.Event", "content.Tag"], output_dir=tmp_path, table_filter=only_kept_events
    )

    index, records = read_records(result.path)
    assert {r["xmlid"] for r in records["content.Event"]} == kept
    assert len(records["content.Tag"]) == Tag.objects.count()
    counts = {t["model"]: t["count"] for t in index["tables"]}
    assert counts == {"content.Event": len(kept), "content.Tag": Tag.objects.count()}
    assert result.counts == counts
    assert verify_archive(result.path).counts == counts


def test_an_export_names_its_kind_in_the_file_index_and_record(db, tmp_path):
    result = export(tables=["content.Tag"], output_dir=tmp_path, kind="incremental")

    index, _ = read_records(result.path)
    assert "-incremental.backup.tar" in result.path.name
    assert index["kind"] == "incremental"
    assert BackupRecord.objects.get(pk=result.backup.pk).kind == "incremental"


@pytest.mark.parametrize("kind", ["", "Full", "../x", "a" * 21, 3])
def test_a_kind_that_cannot_name_an_archive_is_refused_before_any_record(db, tmp_path, kind):
    with pytest.raises(ExportError, match="is not a word of at most 20 lowercase letters"):
        export(tables=["content.Tag"], output_dir=tmp_path, kind=kind)
    assert not BackupRecord.objects.exists()
    assert list(tmp_path.iterdir()) == []
