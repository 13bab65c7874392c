"""The import lock: one import per database, and never left behind by the caller's
transaction (commands run in autocommit; a program may call the engine inside its own
``transaction.atomic()``)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connections, transaction

from sync.locking import import_lock
from tests.locks import free_elsewhere

ALIASES = [
    pytest.param("default", marks=pytest.mark.django_db(transaction=True)),
    pytest.param(
        "maria",
        marks=[
            pytest.mark.crossdb,
            pytest.mark.django_db(databases=["default", "maria"], transaction=True),
        ],
    ),
]


def spoil(alias: str) -> None:
    """An error in the caller's transaction, left as Django leaves it: to be rolled back."""
    try:
        with transaction.atomic(using=alias, savepoint=False), connections[alias].cursor() as c:
            c.execute("SELECT * FROM no_such_table")
    except DatabaseError:
        pass
    assert connections[alias].needs_rollback


@pytest.mark.parametrize("alias", ALIASES)
def test_the_lock_is_free_once_a_transaction_an_error_spoilt_has_ended(alias):
    with transaction.atomic(using=alias), import_lock(alias):
        assert not free_elsewhere(alias)
        spoil(alias)

    assert free_elsewhere(alias)


@pytest.mark.parametrize("alias", ALIASES)
def test_the_lock_taken_in_autocommit_is_free_when_the_block_ends(alias):
    with import_lock(alias):
        assert not free_elsewhere(alias)

    assert free_elsewhere(alias)
