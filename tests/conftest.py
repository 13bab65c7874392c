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


@pytest.fixture
def participant_table_dropped(demo):
    """Demo data whose participant table is gone (dropped inside the test's transaction, so it
    comes back afterwards): an export fails part-way."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # run the demo's deferred FK checks first
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("DROP TABLE content_participant")
