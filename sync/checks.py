"""System checks for the app's settings (``manage.py check``)."""

from django.core.checks import Error, register

from sync.generic import setting_problems


@register()
def check_generic_relations(app_configs, **kwargs) -> list[Error]:
    return [
        Error(f"SYNC_GENERIC_RELATIONS: {problem}", id="sync.E001")
        for problem in setting_problems()
    ]
