"""A plan's entries as the commands print them (see sync/plan.py)."""

from collections.abc import Iterator


def entry_lines(entry: dict, indent: str = "    ", table: bool = False) -> Iterator[str]:
    """An entry's line (action, table when asked, key, reason) and one line per field."""
    reason = f": {entry['reason']}" if entry.get("reason") else ""
    named = f"{entry['table']} " if table else ""
    yield f"{indent}{entry['action']} {named}{entry['key']!r}{reason}"
    for name, value in entry["fields"].items():
        if entry["action"] == "update":
            yield f"{indent}  {name}: {value['old']!r} → {value['new']!r}"
        else:
            yield f"{indent}  {name}: {value!r}"
