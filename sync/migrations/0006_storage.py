from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('sync', '0003_import_applies'),
    ]

    operations = [
        migrations.AddField(
            model_name='backuprecord',
            name='missing_since',
            field=models.DateTimeField(blank=True, help_text='When syncinspect --reconcile --fix found its archive gone from the storage.', null=True),
        ),
    ]
