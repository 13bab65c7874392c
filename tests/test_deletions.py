"""sync.deletions: replace mode's deletions follow on_delete as Django does, without signals."""

from __future__ import annotations

import pytest
from django.db.models import signals

from crearis.content.models import Event, Instructor, Participant, User
from sync.jobs.exports import export
from sync.jobs.imports import run_import
from tests.archive_tools import rewrite_archive
from tests.conftest import run_command

SIGNALS = {
    "pre_delete": signals.pre_delete,
    "post_delete": signals.post_delete,
    "pre_save": signals.pre_save,
    "post_save": signals.post_save,
    "m2m_changed": signals.m2m_changed,
}


@pytest.fixture
def heard():
    """The model signals sent for the site's data while the test runs, as (signal, sender
    label); the sync app's own bookkeeping (jobs, state) is saved as models are."""
    sent = []
    receivers = {}
    for name, signal in SIGNALS.items():

        def receiver(sender, name=name, **kwargs):
            if sender._meta.app_label != "sync":
                sent.append((name, sender._meta.label))

        receivers[name] = receiver
        signal.connect(receiver, weak=False)
    yield sent
    for name, signal in SIGNALS.items():
        signal.disconnect(receivers[name])


def test_a_replace_import_that_deletes_and_cascades_sends_no_signal(demo, tmp_path, heard):
    exported = export(tables=["content.Event"], output_dir=tmp_path).path
    gone = Event.objects.filter(participants__isnull=False).distinct().first()
    participants = Participant.objects.filter(event=gone).count()
    without = rewrite_archive(
        exported,
        tmp_path / "without.tar.gz",
        lambda label, rows: [r for r in rows if r["xmlid"] != gone.xmlid],
    )

    result, _ = run_import(without, mode="replace")

    assert result.cascaded["participants"] == participants > 0
    assert not Event.objects.filter(pk=gone.pk).exists()
    assert not Participant.objects.filter(event_id=gone.pk).exists()
    assert heard == []
    Event.objects.first().delete()  # the receivers do hear a model's own delete
    assert ("pre_delete", "content.Event") in heard


def test_a_deletion_that_sets_references_to_null_sends_no_signal(demo, tmp_path, heard):
    exported = export(tables=["content.Instructor"], output_dir=tmp_path).path
    gone = Instructor.objects.filter(users__isnull=False).first()
    users = list(gone.users.values_list("pk", flat=True))
    without = rewrite_archive(
        exported,
        tmp_path / "without.tar.gz",
        lambda label, rows: [r for r in rows if r["xmlid"] != gone.xmlid],
    )

    run_import(without, mode="replace")

    assert not Instructor.objects.filter(pk=gone.pk).exists()
    assert set(User.objects.filter(pk__in=users).values_list("instructor", flat=True)) == {None}
    assert heard == []


@pytest.mark.crossdb
@pytest.mark.django_db(databases=["default", "pg", "maria"], transaction=True)
@pytest.mark.parametrize("alias", ["pg", "maria"])
def test_signal_free_deletions_cascade_on_every_engine(tmp_path, heard, alias):
    """MariaDB checks foreign keys per statement: the deletions' order must be Django's."""
    run_command("syncseed", database=alias)
    run_command("syncdemo", events=6, seed=7, database=alias)
    events = Event.objects.using(alias)
    exported = export(tables=["content.Event"], using=alias, output_dir=tmp_path).path
    gone = events.filter(participants__isnull=False).distinct().first()
    without = rewrite_archive(
        exported,
        tmp_path / "without.tar.gz",
        lambda label, rows: [r for r in rows if r["xmlid"] != gone.xmlid],
    )
    heard.clear()  # the demo data was made by saving models

    result, _ = run_import(without, mode="replace", using=alias)

    assert result.cascaded["participants"] > 0
    assert not events.filter(pk=gone.pk).exists()
    assert not Participant.objects.using(alias).filter(event_id=gone.pk).exists()
    assert heard == []
