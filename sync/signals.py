"""Signals of the sync app.

``job_finished`` — sent once per job when it has ended (succeeded, failed, cancelled, or
marked failed because it went stale), after the transaction that recorded the end committed.
Arguments: ``sender`` (the job's model), ``job`` (the BackupRecord or ImportRun, as stored).
"""

from django.dispatch import Signal

job_finished = Signal()
