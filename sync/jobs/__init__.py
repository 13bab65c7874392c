"""Exports and imports as jobs: created first, executed (inline or by a worker), watched and
cancelled from any process, and recorded to their end.

- ``lifecycle`` — the states a job goes through, staleness, cancel, finding jobs by name;
- ``channel`` — a running job's progress, heartbeat and cancel flag in the sync cache;
- ``reporter`` — what the engine reports progress to (``JobReporter``);
- ``imports`` / ``exports`` — creating and executing each kind (the service layer).
"""
