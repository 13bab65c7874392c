"""Exports and imports become jobs with one lifecycle (sync.models.Job).

Existing rows keep their data: an import's time becomes its created_at (and started_at), an
export's created_at is also its started_at, "refused" imports become failed ones (their error
already says "Refused: …"; error_detail says so too), and every row gets its own token.
"""

import django.db.models.deletion
import django.utils.timezone
import uuid
from django.conf import settings
from django.db import migrations, models


def existing_rows_as_jobs(apps, schema_editor):
    alias = schema_editor.connection.alias
    for name in ("BackupRecord", "ImportRun"):
        model = apps.get_model("sync", name)
        rows = model.objects.using(alias)
        for pk in rows.values_list("pk", flat=True).iterator():
            rows.filter(pk=pk).update(token=uuid.uuid4())
    BackupRecord = apps.get_model("sync", "BackupRecord")
    BackupRecord.objects.using(alias).update(started_at=models.F("created_at"))
    ImportRun = apps.get_model("sync", "ImportRun")
    imports = ImportRun.objects.using(alias)
    imports.update(created_at=models.F("started_at"))
    imports.filter(status="refused").update(status="failed", error_detail={"reason": "refused"})


class Migration(migrations.Migration):

    dependencies = [
        ('sync', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='importrun',
            options={'ordering': ['-created_at']},
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='error_detail',
            field=models.JSONField(blank=True, default=dict, help_text="The error's structure (reason, table, key, field)."),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='include_secrets',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='level',
            field=models.SmallIntegerField(blank=True, help_text='Compression level.', null=True),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='output_dir',
            field=models.CharField(blank=True, help_text='Where to write (empty: BACKUP_DIR).', max_length=1024),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='progress',
            field=models.JSONField(blank=True, default=dict, help_text='The last progress seen.'),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='started_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='started_by',
            field=models.CharField(blank=True, help_text='Who or what started it, otherwise.', max_length=255),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='task_id',
            field=models.CharField(blank=True, help_text='Celery task id.', max_length=255),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='token',
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.AddField(
            model_name='backuprecord',
            name='user',
            field=models.ForeignKey(blank=True, help_text='Who started it, when a signed-in user did (the admin).', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='importrun',
            name='collect_changes',
            field=models.BooleanField(default=False, help_text='List each changed record.'),
        ),
        migrations.AddField(
            model_name='importrun',
            name='drop_unresolved',
            field=models.BooleanField(default=False, help_text='Leave out records whose generic reference names no row.'),
        ),
        migrations.AddField(
            model_name='importrun',
            name='created_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(
            model_name='importrun',
            name='error_detail',
            field=models.JSONField(blank=True, default=dict, help_text="The error's structure (reason, table, key, field)."),
        ),
        migrations.AddField(
            model_name='importrun',
            name='progress',
            field=models.JSONField(blank=True, default=dict, help_text='The last progress seen.'),
        ),
        migrations.AddField(
            model_name='importrun',
            name='task_id',
            field=models.CharField(blank=True, help_text='Celery task id.', max_length=255),
        ),
        migrations.AddField(
            model_name='importrun',
            name='token',
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.AddField(
            model_name='importrun',
            name='user',
            field=models.ForeignKey(blank=True, help_text='Who started it, when a signed-in user did (the admin).', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='backuprecord',
            name='created_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AlterField(
            model_name='backuprecord',
            name='hostname',
            field=models.CharField(blank=True, help_text='Where it ran.', max_length=255),
        ),
        migrations.AlterField(
            model_name='backuprecord',
            name='pid',
            field=models.IntegerField(blank=True, help_text='The process that ran it.', null=True),
        ),
        migrations.AlterField(
            model_name='backuprecord',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], default='queued', max_length=10),
        ),
        migrations.AlterField(
            model_name='importrun',
            name='hostname',
            field=models.CharField(blank=True, help_text='Where it ran.', max_length=255),
        ),
        migrations.AlterField(
            model_name='importrun',
            name='pid',
            field=models.IntegerField(blank=True, help_text='The process that ran it.', null=True),
        ),
        migrations.AlterField(
            model_name='importrun',
            name='started_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name='importrun',
            name='started_by',
            field=models.CharField(blank=True, help_text='Who or what started it, otherwise.', max_length=255),
        ),
        migrations.AlterField(
            model_name='importrun',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled')], default='queued', max_length=10),
        ),
        migrations.RunPython(existing_rows_as_jobs, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='backuprecord',
            name='token',
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
        migrations.AlterField(
            model_name='importrun',
            name='token',
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
