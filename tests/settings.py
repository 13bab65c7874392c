"""The project's settings plus the test-only app ``tests.awkward`` (see its models)."""

from crearis.settings import *  # noqa: F403
from crearis.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.awkward"]
