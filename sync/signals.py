"""Signals of the sync app.

``job_finished`` — sent once per job when it has ended (succeeded, failed, cancelled, or
marked failed because it went stale), after the transaction that recorded the end committed.
Arguments: ``sender`` (the job's model), ``job`` (the BackupRecord or ImportRun, as stored).

``rotation_finished`` — sent once per rotation that was applied (not for a dry run), after
its deletions were recorded, even when it deleted nothing. Arguments: ``sender``
(``BackupRecord``), ``result`` (a ``sync.rotation.RotationResult``: ``result.deleted`` the
entries whose archives were deleted, ``result.as_dict()`` all of it as JSON-ready values).
See docs/rotation.md.
"""

from django.dispatch import Signal

job_finished = Signal()
rotation_finished = Signal()
