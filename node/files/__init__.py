"""Files: what a user adds and gets, and how its chunks travel.

``local`` encrypts a file into the chunk store and decrypts it back
(specs/chunks.md); ``network`` is the running node's add / get / pin: the
``uploader`` pushes each chunk to the nodes ``locate`` finds for it, the
``fetcher`` pulls chunks from many hosts at once.  Payments for both go
through :mod:`node.exchange`.
"""
