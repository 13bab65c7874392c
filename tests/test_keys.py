"""sync.keys: the sets of keys an import holds compare keys exactly, in memory and on disk."""

from __future__ import annotations

import pytest

from sync.keys import SeenKeys

# Keys that Python hashes alike: hash(-1) == hash(-2), hash(1) == hash(2**61).
SAME_HASH = [((-1,), (-2,)), ((1,), (2**61,)), (("a", -1), ("a", -2))]


@pytest.fixture(params=[100, 0], ids=["in-memory", "spilled"])
def spill_at(request) -> int:
    return request.param


@pytest.mark.parametrize(("first", "second"), SAME_HASH)
def test_keys_with_the_same_hash_are_different_keys(spill_at, first, second):
    assert hash(first) == hash(second)
    seen = SeenKeys(spill_at)
    assert seen.add_new([first]) is None
    assert second not in seen
    assert seen.add_new([second]) is None
    assert first in seen and second in seen
    assert list(seen.absent([(first, "a"), ((7,), "b"), (second, "c")])) == [((7,), "b")]


def test_a_key_given_again_is_named(spill_at):
    seen = SeenKeys(spill_at)
    seen.add_new([(-1,), ("x", 1)])
    assert seen.add_new([(5,), ("x", 1)]) == ("x", 1)
    assert seen.add_new([(6,), (6,)]) == (6,)
    assert (5,) not in seen, "nothing of a refused batch is added"


def test_owned_keys_keep_their_owner(spill_at):
    values = SeenKeys(spill_at, owned=True)
    assert values.add_new([(-1,), (-2,)], [("a",), ("b",)]) is None
    assert values.owner((-2,)) == ("b",)
    assert values.owner((-3,)) is None
    assert values.add_new([(-1,)], [("c",)]) == (-1,)
    assert values.owner((-1,)) == ("a",)


def test_values_of_any_field_type_can_be_held(spill_at):
    """Unique values (not only keys) are held: decimals, datetimes, UUIDs."""
    import datetime
    import decimal
    import uuid

    values = [(decimal.Decimal("1.50"),), (datetime.datetime(2026, 1, 1),), (uuid.UUID(int=7),)]
    seen = SeenKeys(spill_at, owned=True)
    assert seen.add_new(values, [("a",), ("b",), ("c",)]) is None
    assert (decimal.Decimal("1.5"),) in seen
    assert seen.owner((uuid.UUID(int=7),)) == ("c",)
