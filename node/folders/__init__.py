"""Encrypted folder snapshots on the store and the network (specs/folders.md).

``index`` keeps what a scan can skip and what was sent; ``snapshot`` scans
a directory into the store; ``history`` reads snapshots back; ``retention``
applies the retention policy (prune, chunks to keep); ``restore``
writes a tree out; ``chunklist`` writes and reads the chunk lists a verify link reads;
``pinning`` fetches and keeps a folder with its verify link;
``local`` puts them together for a CLI backend;
``network`` serves them through the running node (fetch, paid upload,
publishing the folder's signed record in the DHT).
"""
