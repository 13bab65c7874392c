"""System checks for the app's settings (``manage.py check``)."""

from django.conf import settings
from django.core.checks import Error, register

from sync.generic import setting_problems


@register()
def check_generic_relations(app_configs, **kwargs) -> list[Error]:
    return [
        Error(f"SYNC_GENERIC_RELATIONS: {problem}", id="sync.E001")
        for problem in setting_problems()
    ]


@register()
def check_read_limits(app_configs, **kwargs) -> list[Error]:
    """The bounds of what a reader takes from an archive (see sync.archive.ReadLimits)."""
    return [
        Error(f"{name} must be a positive number of bytes, not {value!r}.", id="sync.E002")
        for name in ("SYNC_MAX_MEMBER_SIZE", "SYNC_MAX_LINE_SIZE")
        if not (type(value := getattr(settings, name)) is int and value > 0)
    ]
