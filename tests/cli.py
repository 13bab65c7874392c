"""Running management commands as a user does, and checking a refusal as a user sees it.

``cli`` runs a command in-process and reports what ``manage.py`` would: exit status 0, or
the ``CommandError``'s status and its message. Any other exception escapes, failing the test:
for the user it would have been a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import StringIO

from django.core.management import CommandError, call_command

from tests.fingerprint import fingerprint


@dataclass
class Outcome:
    status: int
    out: str
    error: str  # the CommandError's message ("" on success)


def cli(name: str, *args, **options) -> Outcome:
    out, err = StringIO(), StringIO()
    try:
        call_command(name, *args, stdout=out, stderr=err, **options)
    except CommandError as exc:
        return Outcome(exc.returncode, out.getvalue(), str(exc))
    return Outcome(0, out.getvalue(), "")


def assert_refused(
    *args, expected: str, using: str = "default", command: str = "syncimport", **options
) -> Outcome:
    """Run ``command``; it must fail with exit status 1 and a one-line message containing
    ``expected``, and leave every content table of ``using`` exactly as it was."""
    before = fingerprint(using)
    outcome = cli(command, *args, **options)
    assert outcome.status == 1, f"expected a refusal, got status {outcome.status}: {outcome.out}"
    assert "\n" not in outcome.error.strip(), f"not one line: {outcome.error!r}"
    assert "Traceback" not in outcome.error
    assert expected in outcome.error, f"{expected!r} not in {outcome.error!r}"
    assert fingerprint(using) == before, "a refused command changed the database"
    return outcome
