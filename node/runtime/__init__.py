"""The node process: its data dir and config (``config``) and its composition (``daemon``).

``config`` sits at the bottom (every layer may read the data dir);
``daemon`` at the top (it composes every service).  This package's
``__init__`` imports neither, so importing ``node.runtime.config`` does
not pull in the whole node.
"""
