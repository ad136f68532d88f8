"""mu's pure protocol layer (sans-I/O).

Nothing under ``protocol`` touches sockets, files, clocks, SQLite, trio or
global randomness: callers pass bytes, ``now`` and random bytes in and get
values or events out.  ``tests/protocol/test_purity.py`` enforces it.
"""
