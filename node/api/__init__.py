"""The node's HTTP faces: the local control API the CLI talks to (specs/network.md §6)."""
