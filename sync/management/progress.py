"""A terminal's progress bar as a listener of a job's reporter (sync.jobs.reporter)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBar:
    """A tqdm bar on stderr, shown only on a terminal; the job's phase follows its title."""

    def __init__(self, title: str, enabled: bool = True):
        self.title = title
        self.bar = tqdm(unit="rec", desc=title, disable=not (enabled and sys.stderr.isatty()))

    def total(self, total: int | None) -> None:
        self.bar.reset(total=total)

    def advance(self, count: int) -> None:
        self.bar.update(count)

    def phase(self, phase: str) -> None:
        self.bar.set_description(f"{self.title}: {phase}" if phase else self.title)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
