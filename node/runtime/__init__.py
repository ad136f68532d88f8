"""The node process: its data dir and config (``config``), its lock (``lock``) and its composition (``daemon``).

``config`` and ``lock`` sit at the bottom (every layer may read the data dir);
``daemon`` at the top (it composes every service).  This package's
``__init__`` imports none of them, so importing ``node.runtime.config`` does
not pull in the whole node.
"""
