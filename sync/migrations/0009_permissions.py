from django.db import migrations, models


class Migration(migrations.Migration):
    """The admin's own permissions on the sync app (run an export or import, download or
    upload a backup; the view permissions show the lists), and the rows an export of selected
    records takes."""

    dependencies = [
        ("sync", "0008_webhooks"),
    ]

    operations = [
        migrations.AddField(
            model_name="backuprecord",
            name="selection",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Only these rows, when set: model label → primary keys (Export selected).",
            ),
        ),
        migrations.AlterModelOptions(
            name="backuprecord",
            options={
                "ordering": ["-created_at"],
                "permissions": [
                    ("run_export", "Can start an export"),
                    ("download_backup", "Can download a backup archive"),
                    ("upload_backup", "Can upload a backup archive"),
                ],
            },
        ),
        migrations.AlterModelOptions(
            name="importrun",
            options={
                "ordering": ["-created_at"],
                "permissions": [("run_import", "Can preview and run an import")],
            },
        ),
    ]
