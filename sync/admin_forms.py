"""Forms of the sync app's admin pages."""

from __future__ import annotations

from django import forms
from django.apps import apps
from django.template.defaultfilters import filesizeformat

from sync.archive import COMPRESSIONS
from sync.conf import sync_settings
from sync.schema import syncable_models


def table_choices(using: str = "default") -> list[tuple[str, list[tuple[str, str]]]]:
    """Every table an export can take, grouped by app, each with its record count."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for model in syncable_models():
        count = model._base_manager.using(using).count()
        name = str(model._meta.verbose_name_plural)
        groups.setdefault(model._meta.app_label, []).append(
            (model._meta.label, f"{name} ({model._meta.label}) — {count:,} {pluralize(count)}")
        )
    return [
        (str(apps.get_app_config(label).verbose_name), sorted(choices))
        for label, choices in sorted(groups.items())
    ]


def pluralize(count: int) -> str:
    return "record" if count == 1 else "records"


class NewExportForm(forms.Form):
    tables = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple, help_text="The tables to export."
    )
    with_dependencies = forms.BooleanField(
        required=False,
        label="With dependencies",
        help_text="Also export the tables the chosen ones reference (shown before it starts).",
    )
    compression = forms.ChoiceField(choices=[(c, c) for c in COMPRESSIONS], initial="gz")
    # The tables the page showed "with dependencies" to take (comma-separated): the export
    # starts when the choice still comes to those.
    confirmed = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, using: str = "default", **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tables"].choices = table_choices(using)


class UploadForm(forms.Form):
    archive = forms.FileField(help_text="A backup archive (….backup.tar.gz, .tar.zst, …).")

    def clean_archive(self):
        archive = self.cleaned_data["archive"]
        limit = sync_settings.SYNC_UPLOAD_MAX_SIZE
        if archive.size > limit:
            raise forms.ValidationError(too_large(limit))
        return archive


def too_large(limit: int) -> str:
    return (
        f"The archive is larger than the upload limit, {filesizeformat(limit)} "
        f"(SYNC_UPLOAD_MAX_SIZE); copy it to the server and use syncimport."
    )


class ExportSelectedForm(forms.Form):
    with_references = forms.BooleanField(
        required=False,
        label="With the records they reference",
        help_text="Also export the records the selected ones point at, directly or not.",
    )
