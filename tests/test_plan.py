"""The plan a dry run stores, paged; applying it exactly (docs/plans.md)."""

import shutil

import orjson
import pytest

from crearis.content.models import Event, Project, Tag
from sync.importer import ImportFailed
from sync.jobs.exports import export
from sync.jobs.imports import apply_plan, run_import
from sync.jobs.plans import plan_of
from sync.models import ImportRun
from sync.plan import Plan
from tests.cli import assert_refused, cli
from tests.conftest import run_command
from tests.fingerprint import fingerprint
from tests.plan_tools import plan_entries


@pytest.fixture
def previewed(demo, tmp_path):
    """An archive, a target that differs from it, and a dry run's plan of importing it."""
    archive = export(output_dir=tmp_path / "a", compression="none").path
    Project.objects.filter(domaincode="proj00000").update(name="renamed here", regio=None)
    Tag.objects.create(name="only here")
    Event.objects.filter(pk=Event.objects.order_by("pk").values("pk")[:1]).delete()
    preview, run = run_import(archive, dry_run=True)
    return archive, preview, run


def changed(run: ImportRun) -> list:
    return [
        (e["table"], e["key"], e["action"]) for e in plan_entries(run) if e["action"] != "unchanged"
    ]


def test_the_plan_holds_each_record_by_key_with_field_names(previewed):
    _, preview, run = previewed
    entries = plan_entries(run)
    assert len(entries) >= sum(t.new + t.updated + t.unchanged for t in preview.tables.values())
    (project,) = plan_entries(run, "content.Project", "update")
    assert project["key"] == "proj00000"
    assert project["fields"]["name"]["old"] == "renamed here"
    assert project["fields"]["regio"]["old"] is None
    assert isinstance(project["fields"]["regio"]["new"], str | list)  # a sync key, not an id
    (tag,) = plan_entries(run, "content.Tag", "delete")
    assert (tag["key"], tag["fields"]["name"]) == ("only here", "only here")
    (event,) = plan_entries(run, "content.Event", "insert")
    assert all(not isinstance(v, int) for v in event["fields"]["tags"])  # keys, not ids


def test_a_plan_is_read_a_page_at_a_time_by_table_and_action(previewed):
    _, _, run = previewed
    unchanged = plan_entries(run, "content.Participant", "unchanged")
    assert len(unchanged) > 7
    plan = Plan(plan_of(run))
    try:
        assert plan.page(2, 3, "content.Participant", "unchanged") == unchanged[3:6]
        assert plan.page(1, 5) == plan_entries(run)[:5]
        assert plan.counts()["content.Tag"]["delete"] == 1
    finally:
        plan.close()


def test_applying_an_unchanged_target_does_what_the_plan_said(previewed):
    _, preview, run = previewed
    result, applied = apply_plan(run.label)
    assert applied.applies == run and not applied.dry_run
    assert result.counts() == preview.counts()
    assert changed(applied) == changed(run)
    assert Project.objects.get(domaincode="proj00000").name != "renamed here"


def test_applying_after_the_target_changed_is_refused_naming_the_record(previewed):
    _, _, run = previewed
    Project.objects.filter(domaincode="proj00001").update(name="changed after the preview")
    outcome = assert_refused(
        "--apply-plan", run.label, expected="content.Project 'proj00001'", no_input=True
    )
    assert "preview again" in outcome.error
    assert ImportRun.objects.filter(applies=run).get().status == "failed"


def test_applying_a_plan_whose_archive_changed_is_refused(previewed, tmp_path):
    archive, _, run = previewed
    other = export(output_dir=tmp_path / "b", compression="none").path  # the target as it is
    shutil.copyfile(other, archive)
    assert_refused("--apply-plan", run.label, expected="changed or is gone", no_input=True)


def test_only_a_finished_dry_run_is_applied(previewed):
    archive, _, _ = previewed
    _, real = run_import(archive)
    with pytest.raises(ImportFailed, match="is not a dry run"):
        apply_plan(real.label)
    assert_refused("--apply-plan", "import-99", expected="There is no import-99", no_input=True)


def test_json_asks_before_it_imports(previewed, monkeypatch):
    archive, _, _ = previewed
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    before = fingerprint()
    outcome = cli("syncimport", str(archive), json=True)
    assert (outcome.status, outcome.error) == (1, "Import cancelled; nothing was changed.")
    assert fingerprint() == before
    tables = orjson.loads(outcome.out)["tables"]  # the preview, printed from its plan
    assert any(c["action"] == "delete" for t in tables for c in t["changes"])


def test_yes_applies_the_plan_that_was_shown(previewed, monkeypatch):
    archive, _, run = previewed
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    outcome = cli("syncimport", str(archive))
    assert outcome.status == 0, outcome.error
    shown = ImportRun.objects.filter(dry_run=True).latest("pk")
    applied = ImportRun.objects.get(applies=shown)
    assert applied.status == "succeeded" and changed(applied) == changed(run)


@pytest.mark.crossdb
@pytest.mark.django_db(databases=["default", "pg"], transaction=True)
def test_a_plan_made_on_another_database_is_refused(tmp_path):
    """The job row and its plan moved to another database (say, a restored copy): refused."""
    run_command("syncseed")
    archive = export(output_dir=tmp_path, compression="none").path
    _, run = run_import(archive, dry_run=True)
    ImportRun.objects.using("pg").filter(pk=run.pk).delete()
    run.save(using="pg", force_insert=True)
    before = fingerprint("pg")
    with pytest.raises(ImportFailed, match="plan was made on another database"):
        apply_plan(run.label, using="pg")
    assert fingerprint("pg") == before


def test_syncplan_pages_through_a_plan(previewed):
    _, _, run = previewed
    counts = orjson.loads(cli("syncplan", run.label, json=True).out)
    assert counts["content.Tag"] == {"delete": 1, "unchanged": Tag.objects.count() - 1}
    page = cli("syncplan", run.label, table="content.Tag", action="delete", page=1).out
    assert page.startswith("delete content.Tag 'only here'\n") and "  name: 'only here'\n" in page
    rows = orjson.loads(cli("syncplan", run.label, page=2, page_size=4, json=True).out)
    assert rows == plan_entries(run)[4:8]
    assert cli("syncplan", run.label, page=999_999, json=True).out.strip() == "[]"


def test_syncplan_refuses_what_has_no_plan(previewed):
    assert cli("syncplan", "import-99").error == "There is no import-99 in database 'default'."
    outcome = cli("syncplan", "export-1")
    assert outcome.status == 1 and "Traceback" not in outcome.error


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_cascaded_deletion_names_the_record_whose_deletion_took_it(demo, tmp_path, dry_run):
    from crearis.content.models import Participant
    from tests.archive_tools import rewrite_archive

    exported = export(tables=["content.Event"], output_dir=tmp_path).path
    gone = Event.objects.filter(participants__isnull=False).distinct().order_by("pk").first()
    taken = set(Participant.objects.filter(event=gone).values_list("xmlid", flat=True))
    without = rewrite_archive(
        exported,
        tmp_path / "without.tar.gz",
        lambda label, rows: [r for r in rows if r["xmlid"] != gone.xmlid],
    )

    _, run = run_import(without, mode="replace", dry_run=dry_run, collect_changes=True)

    deleted = plan_entries(run, "content.Participant", "delete")
    assert {entry["key"] for entry in deleted} >= taken and taken
    cause = f"cascade (on_delete) of content.Event {gone.xmlid!r}"
    assert {entry.get("reason") for entry in deleted if entry["key"] in taken} == {cause}
    [event] = plan_entries(run, "content.Event", "delete")
    assert event["key"] == gone.xmlid and "reason" not in event


def test_a_new_dry_run_prunes_old_plans_of_ended_jobs_but_none_still_needed(
    seeded, tmp_path, settings
):
    import os
    import time

    settings.SYNC_PLAN_KEEP_DAYS = 7
    archive = export(tables=["content.Tag"], output_dir=tmp_path).path
    ended = [run_import(archive, dry_run=True)[1] for _ in range(3)]
    old_done, applied, recent = ended
    ImportRun.objects.create(  # an import applying it, queued
        archive=str(archive), mode="replace", applies=applied, database="default"
    )
    waiting = ImportRun.objects.create(
        archive=str(archive), mode="replace", dry_run=True, database="default"
    )
    plan_of(waiting).write_bytes(b"")  # (as if written while it runs)
    other_database = plan_of(old_done).with_name(
        plan_of(old_done).name.replace(plan_of(old_done).name.split("-")[2], "0" * 12)
    )
    shutil.copy(plan_of(old_done), other_database)
    ten_days_ago = time.time() - 10 * 24 * 3600
    for path in (plan_of(old_done), plan_of(applied), plan_of(waiting), other_database):
        os.utime(path, (ten_days_ago, ten_days_ago))

    _, new = run_import(archive, dry_run=True)

    assert not plan_of(old_done).exists()  # ended, old: pruned
    assert plan_of(applied).exists()  # an import that has not ended applies it
    assert plan_of(waiting).exists()  # its job has not ended
    assert plan_of(recent).exists() and plan_of(new).exists()  # young
    assert other_database.exists()  # another database's, pruned by its own jobs
    with pytest.raises(ImportFailed, match=f"{old_done.label}: No plan at"):
        apply_plan(old_done.label)


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
@pytest.mark.parametrize("check", [False, True], ids=["by-default", "same-stamp-check"])
def test_other_content_under_the_same_updated_at(demo, tmp_path, settings, check, dry_run):
    """By default (sync.decide.needs_content) a record with the target's updated_at is not
    read: another content under the same stamp is kept and counted unchanged. With
    SYNC_SAME_STAMP_CHECK it is read, kept too, and reported as its own case."""
    settings.SYNC_SAME_STAMP_CHECK = check
    archive = export(output_dir=tmp_path, compression="none").path
    project = Project.objects.order_by("domaincode").first()
    Project.objects.filter(pk=project.pk).update(name="edited, same stamp")  # no auto_now

    result, run = run_import(archive, mode="update", dry_run=dry_run, collect_changes=True)

    projects = result.tables["content.Project"]
    reported = int(check)
    assert (projects.skipped, projects.updated, projects.same_stamp) == (reported, 0, reported)
    assert projects.unchanged == Project.objects.count() - reported
    assert Project.objects.get(pk=project.pk).name == "edited, same stamp"  # kept
    skipped = plan_entries(run, "content.Project", "skip")
    assert [(e["key"], e["reason"]) for e in skipped] == [
        (project.domaincode, "same-timestamp-different-content")
    ][:reported]
    assert all(t.same_stamp == 0 for label, t in result.tables.items() if label != projects.label)
    shown = cli("syncimport", str(archive), mode="update", dry_run=True).out
    assert ("1 with the target's updated_at but other content" in shown) is check


def test_a_plans_summary_counts_each_table_as_a_page_shows_it(previewed):
    _, preview, run = previewed
    plan = Plan(plan_of(run))
    try:
        summary = plan.summary()
        changed = list(plan.entries(changes_only=True))
        (project,) = [e for e in changed if e["table"] == "content.Project"]
        assert plan.entry("content.Project", "proj00000") == project
        assert plan.entry("content.Project", "no such key") is None
    finally:
        plan.close()
    for table, diff in preview.tables.items():
        shown = summary[table]
        assert (shown["new"], shown["updated"], shown["unchanged"]) == (
            diff.new,
            diff.updated,
            diff.unchanged,
        )
    assert summary["content.Tag"]["deleted"] == 1
    assert sum(s["cascaded"] for s in summary.values()) == sum(preview.cascaded.values())
    assert all(e["action"] != "unchanged" for e in changed)
    assert len(changed) == sum(
        n for s in summary.values() for c, n in s.items() if c != "unchanged"
    )
