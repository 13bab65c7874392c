"""Profile one export in-process with cProfile, against a database the bench built::

    DATABASE_URL=sqlite:///bench/results/bench-20000.sqlite3 \
        .venv/bin/python bench/profile_export.py --compression none --top 30

Prints the wall time, records per second and the functions with the most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compression", default="none")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--no-profile", action="store_true", help="Only time the export.")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crearis.settings")
    import django

    django.setup()
    from sync.jobs.exports import export

    with tempfile.TemporaryDirectory(prefix="crearis-profile-") as out:
        profiler = cProfile.Profile()
        started = time.perf_counter()
        if args.no_profile:
            result = export(tables=["content"], compression=args.compression, output_dir=out)
        else:
            result = profiler.runcall(
                export, tables=["content"], compression=args.compression, output_dir=out
            )
        seconds = time.perf_counter() - started
    print(f"{result.total} records in {seconds:.2f} s: {result.total / seconds:,.0f} records/s")
    if not args.no_profile:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
