import logging

import psycopg
import pytest


def test_psycopgs_cleanup_warning_after_an_interrupted_pipeline_is_not_printed(caplog):
    """A Ctrl-C or cancel that stops an executemany (a psycopg pipeline) makes psycopg log
    "error ignored terminating …" beside the error the user is told; the sync app drops it."""
    caplog.set_level(logging.WARNING)
    conn = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    with conn, pytest.raises(KeyboardInterrupt), conn.pipeline():
        conn.execute("SELECT 1 / 0")
        raise KeyboardInterrupt
    assert [r.getMessage() for r in caplog.records if r.name == "psycopg"] == []


def test_other_psycopg_warnings_still_get_through(caplog):
    caplog.set_level(logging.WARNING)
    logging.getLogger("psycopg").warning("connection pool is exhausted")
    assert [r.getMessage() for r in caplog.records] == ["connection pool is exhausted"]
