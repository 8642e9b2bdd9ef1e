"""The outgoing side: local export folders mirrored to Box, each file exactly once.

Scans and watch events only feed the SQLite queue (`state`); pure `planner` and `settle`
functions decide; `uploader` moves bytes through `BoxRemote`; `engine.OutgoingSide` runs
the threads.
"""
