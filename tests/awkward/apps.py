from django.apps import AppConfig


class AwkwardConfig(AppConfig):
    """Models that exist only in the tests: the shapes a sync tool must cope with that the
    content platform does not have (generic relations, unique values other than the key, a
    filtering default manager, required fields without a default)."""

    name = "tests.awkward"
    label = "awkward"
    default_auto_field = "django.db.models.BigAutoField"
