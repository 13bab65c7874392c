"""Django field types by what their values are, named once for every module that asks.

Plain names only (no Django import): the archive checker uses them in a process that does not
load Django's ORM.
"""

# Fields whose values are text.
TEXT_FIELDS = frozenset({"CharField", "TextField", "SlugField", "EmailField", "URLField"})

# Fields whose values are integers.
INTEGER_FIELDS = frozenset({
    "AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
    "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
})  # fmt: skip
