"""The running mu node on trio: the I/O around the pure rules of ``protocol``.

Layers, bottom up.  A layer imports only from the layers before it in
this list (and from ``protocol``), never from one after it
(tests/test_layout.py checks it):

- ``runtime.config``: the data dir and its files.
- ``runtime.lock``: one process per data dir (an exclusive ``flock``).
- ``runtime.http``: the one HTTP server (hypercorn's trio worker, limits)
  under the control API and ``mu chain``'s RPC.
- ``store``: chunk files on disk, their index, pins and paid retention, the GC.
- ``transport``: Noise sessions over TCP, frames, concurrent requests.
- ``dht``: Kademlia over UDP: routing, lookups, provider and contact records.
- ``ledger``: SQLite: channels, payments, settlements.
- ``bitcoin``: the Bitcoin Core JSON-RPC client and the wallet.
- ``chain``: ``mu chain``, the embedded regtest chain (libbitcoinkernel).
- ``api``: the control API's HTTP server and client; the services above
  it register their routes on the server.
- ``exchange``: paid chunk exchange: the payer and the payee (I/O around
  ``protocol.payments``' per-channel machines), channels opened on demand
  (``paying``) and closed on chain (``settlement``).
- ``files``: a user's files: encrypt into the store and back (``local``),
  push chunks to their hosts (``uploader``), pull them from many
  (``fetcher``, free or paid sources), find and dial hosts (``locate``),
  and the running node's add / get / pin routes (``network``).
- ``folders``: encrypted folder snapshots: the scan index (``index``),
  snapshot, history, restore on the store (``local``), and the running
  node's folder routes (``network``: fetch, paid upload, the folder's
  signed record in the DHT).
- ``sync``: a synced folder's disk side: local change detection
  (filesystem events, debounced, rescans, ``.muignore``) and applying
  remote changes atomically (I/O around ``protocol.sync``'s merge), and
  one device's sync rounds through its own record, the roster and hosts
  (``engine``).
- ``runtime.settings``: every setting's default, ``config.toml``, flags.
- ``web``: the web app ``mu node`` serves beside the control API: pages,
  uploads, downloads answered with Range (``mu ui`` logs a browser in).
- ``runtime.daemon``: ``mu node``, every service above in one nursery.
- ``cli``: the ``mu`` program.

Where a chunk goes on ``mu add``: ``cli`` -> ``api`` (to the running
node) -> ``files.network`` -> ``files.local`` (encrypted into ``store``)
-> ``files.uploader`` -> ``files.locate`` (a ``dht`` lookup) ->
``exchange.paying`` -> the payer -> ``transport`` -> the host's
``exchange`` server (the payee charges, its ``ledger`` records) -> the
host's ``store``.

Where a payment goes on ``mu get``: ``files.fetcher`` asks a paid source
-> ``exchange.paying`` (a channel opened on demand through ``bitcoin``)
-> the payer (``protocol.payments`` says what is owed; our ``ledger``
records it) -> ``transport`` -> the host's payee (checks, records, then
serves) -> later ``exchange.settlement`` closes the channel on chain.
"""
