import logging

from django.apps import AppConfig


def not_cleanup_noise(record: logging.LogRecord) -> bool:
    """False for psycopg's "error ignored terminating …" warning: psycopg logs it when ending a
    pipeline or COPY fails while another exception (a Ctrl-C, a cancel, a refusal) is already
    on its way up. That exception is what the user is told; the warning only repeats it as
    noise on stderr, where a one-line error was promised."""
    return not record.getMessage().startswith("error ignored terminating")


class SyncConfig(AppConfig):
    name = "sync"
    verbose_name = "Crearis Sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from sync import checks  # noqa: F401 - registers the system checks
        from sync.signals import job_finished, rotation_finished
        from sync.webhooks import on_job_finished, on_rotation_finished

        job_finished.connect(on_job_finished, dispatch_uid="sync.webhooks")
        rotation_finished.connect(on_rotation_finished, dispatch_uid="sync.webhooks")

        logging.getLogger("psycopg").addFilter(not_cleanup_noise)
        from django.apps import apps

        if apps.is_installed("django.contrib.admin"):
            from sync.admin_export_selected import install_export_selected

            install_export_selected()
