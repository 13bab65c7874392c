from io import StringIO

import pytest
from django.core.management import call_command


def run_command(name: str, *args, **options) -> str:
    """Run a management command and return what it wrote to stdout."""
    out = StringIO()
    call_command(name, *args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


@pytest.fixture
def seeded(db):
    """A database holding the platform's system data."""
    run_command("syncseed")


@pytest.fixture
def demo(seeded):
    """System data plus a small demo data set."""
    run_command("syncdemo", events=12, seed=7)
