from django.apps import AppConfig


class ContentConfig(AppConfig):
    name = "crearis.content"
    label = "content"
    verbose_name = "Crearis content"
    default_auto_field = "django.db.models.BigAutoField"
