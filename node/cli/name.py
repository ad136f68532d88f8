"""``mu name create / publish / resolve``: signed mutable names in the DHT (specs/dht.md §7.3).

A name is an Ed25519 public key; its value (a mu link or any text of at
most ``MAX_MUTABLE_VALUE`` bytes) is a signed record with a sequence number
stored on the k DHT nodes closest to the key.  ``create`` writes a key file
(mode 0600) holding the seed and the last sequence published with it;
``publish`` signs the next sequence (one above both the key file's and the
network's newest) and stores it; ``resolve`` prints the newest record.

The CLI signs, so the seed never leaves it.  The record travels through
the running node when one answers on the data dir (which then republishes
it, specs/network.md §6 Control API), else through a short-lived DHT node
joined from the saved table and ``--bootstrap`` peers, as ``mu dht lookup``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from node.api.control import ControlClient, ControlError
from node.api.names import record_json
from node.cli.arguments import positive_float
from node.cli.backend import answering_node
from node.cli.exit_codes import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, fail
from node.dht import DhtNode, load_table, open_dht
from node.runtime.config import ConfigError, load_identity, resolve_data_dir, write_secret_file
from protocol.identity import Identity
from protocol.kademlia.mutable import MAX_MUTABLE_VALUE, SEQ_LIMIT, MutableRecord, sign_mutable

T = TypeVar("T")

#: Seconds a command waits for joining and its DHT operations together, by default.
DEFAULT_NAME_TIMEOUT = 30.0
#: Largest key file read back (specs/dht.md §7.3 Name key file).
MAX_KEY_FILE_SIZE = 4096
KEY_FILE_FORMAT = "mu-name-key"


class KeyFileError(Exception):
    """A key file is missing, unreadable or malformed."""


def write_key_file(path: Path, seed: bytes, seq: int | None) -> None:
    """Write the key file (0600, atomically): its seed and the last sequence published with it."""
    doc = {"format": KEY_FILE_FORMAT, "version": 1, "public_key": Identity(seed).public_key.hex(),
           "seed": seed.hex(), "seq": seq}
    write_secret_file(path, (json.dumps(doc) + "\n").encode())


def read_key_file(path: Path) -> tuple[bytes, int | None]:
    """The seed and last published sequence of a key file."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_SIZE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        doc: Any = json.loads(data) if len(data) <= MAX_KEY_FILE_SIZE else None
        seed = bytes.fromhex(doc["seed"])
        seq = doc["seq"]
        ok = (doc["format"] == KEY_FILE_FORMAT and doc["version"] == 1 and len(seed) == 32
              and (seq is None or (type(seq) is int and 0 <= seq < SEQ_LIMIT))
              and doc["public_key"] == Identity(seed).public_key.hex())
    except (ValueError, TypeError, KeyError, IndexError):
        ok = False
    if not ok:
        raise KeyFileError(f"{path} is not a mu name key file")
    return seed, seq


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    name = sub.add_parser("name", help="signed mutable names in the DHT (a public key pointing at a value)")
    name_sub = name.add_subparsers(dest="name_command", metavar="SUBCOMMAND", required=True)
    create = name_sub.add_parser("create", help="write a new name key file (mode 0600) and print the name")
    create.add_argument("keyfile", type=Path, help="where to write the key file (must not exist)")
    create.set_defaults(func=run_create)

    publish = name_sub.add_parser("publish", help="point the name of KEYFILE at VALUE (next sequence number)")
    publish.add_argument("keyfile", type=Path, help="a key file written by `mu name create`")
    publish.add_argument("value", help=f"a mu link or any text, at most {MAX_MUTABLE_VALUE} bytes as UTF-8")
    resolve = name_sub.add_parser("resolve", help="print the newest sequence and value of a name")
    resolve.add_argument("public_key", help="the name: 64 hex digits, as `mu name create` printed")
    for p, func in ((publish, run_publish), (resolve, run_resolve)):
        p.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT",
                       help="without a running node: a DHT node to join through "
                            "(repeatable; default: none, only the saved table)")
        p.add_argument("--timeout", type=positive_float, default=DEFAULT_NAME_TIMEOUT,
                       help=f"seconds for the whole operation (default {DEFAULT_NAME_TIMEOUT:g})")
        p.add_argument("--loopback-devnet", action="store_true",
                       help="without a running node: the peers are a local test network on 127.0.0.1")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)


def run_create(args: argparse.Namespace) -> int:
    path: Path = args.keyfile
    if os.path.lexists(path):
        return fail(f"{path} already exists: not overwriting a key")
    seed = secrets.token_bytes(32)
    try:
        write_key_file(path, seed, None)
    except OSError as exc:
        return fail(f"cannot write {path}: {exc.strerror}")
    print(Identity(seed).public_key.hex())
    return EXIT_OK


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


class _Dht:
    """The DHT a command talks to: the running node's, or a short-lived one of its own."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data_dir = resolve_data_dir(args.data_dir)
        self.client: ControlClient | None = answering_node(self.data_dir)
        self.addresses = [_parse_address(a) for a in args.bootstrap]

    def run(self, through_node: Callable[[ControlClient], Awaitable[T]],
            through_dht: Callable[[DhtNode], Awaitable[T]]) -> T | None:
        """One operation under ``--timeout``; None if it ran out of time."""
        client = self.client

        async def go() -> T | None:
            with trio.move_on_after(self.args.timeout):
                if client is not None:
                    return await through_node(client)
                return await self._short_lived(through_dht)
            return None

        return trio.run(go)

    async def _short_lived(self, op: Callable[[DhtNode], Awaitable[T]]) -> T:
        try:
            identity, data_dir = load_identity(self.data_dir, create=False), self.data_dir
        except ConfigError:
            # No node was ever set up here: a throwaway identity serves a one-off lookup.
            identity, data_dir = Identity(secrets.token_bytes(32)), None
        if not self.addresses and (data_dir is None or not load_table(data_dir, identity.node_id)):
            raise ControlError(503, "no-peers", "no running node and no known peers: pass --bootstrap HOST:PORT")
        failure: Exception | None = None
        async with open_dht(identity, "0.0.0.0", 0, data_dir=data_dir,
                            loopback_devnet=self.args.loopback_devnet) as dht:
            if self.addresses:
                await dht.bootstrap(self.addresses)
            try:
                result = await op(dht)
            except Exception as exc:
                # Raised outside the DHT's nursery, so the caller sees it bare, not in a group.
                failure = exc
        if failure is not None:
            raise failure
        return result


def _public_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError("a name is 64 hex digits (a 32-byte Ed25519 public key)")
    return key


async def _resolve_via_node(client: ControlClient, public_key: bytes) -> MutableRecord | None:
    try:
        reply = await client.call("POST", "name/resolve", {"public_key": public_key.hex()})
    except ControlError as exc:
        if exc.code == "not-found":
            return None
        raise
    return MutableRecord.parse(bytes.fromhex(reply["record"]))


def run_resolve(args: argparse.Namespace) -> int:
    try:
        public_key = _public_key(args.public_key)
        dht = _Dht(args)
        found = dht.run(lambda c: _resolve_via_node(c, public_key), lambda d: d.resolve_record(public_key))
    except ValueError as exc:
        return fail(str(exc))
    except ControlError as exc:
        return fail(exc.message)
    if found is None:
        return fail(f"no record for {public_key.hex()} found", EXIT_NOT_FOUND)
    if args.json:
        print(json.dumps(record_json(found)))
    else:
        print(f"seq {found.seq}")
        print(_show(found.value))
    return EXIT_OK


def _show(value: bytes) -> str:
    """The value as text, or as hex (prefixed) when it is not UTF-8."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return "hex:" + value.hex()


def run_publish(args: argparse.Namespace) -> int:
    value = args.value.encode()
    if len(value) > MAX_MUTABLE_VALUE:
        return fail(f"value is {len(value)} bytes; a name holds at most {MAX_MUTABLE_VALUE}")
    try:
        seed, last = read_key_file(args.keyfile)
        public_key = Identity(seed).public_key
        dht = _Dht(args)

        async def via_node(client: ControlClient) -> tuple[MutableRecord, int]:
            record = _next(seed, value, last, await _resolve_via_node(client, public_key), args.keyfile)
            reply = await client.call("POST", "name/publish", {"record": record.serialize().hex()})
            return record, int(reply["stored"])

        async def via_dht(node: DhtNode) -> tuple[MutableRecord, int]:
            record = _next(seed, value, last, await node.resolve_record(public_key), args.keyfile)
            return record, await node.publish_record(record)

        result = dht.run(via_node, via_dht)
    except (KeyFileError, ValueError, OSError) as exc:
        return fail(str(exc))
    except ControlError as exc:
        return fail(exc.message)
    if result is None:
        return fail(f"publishing took longer than {args.timeout:g} s")
    record, stored = result
    if args.json:
        print(json.dumps({**record_json(record), "stored": stored}))
    else:
        print(f"{public_key.hex()} seq {record.seq}: stored on {stored} nodes")
    if not stored:
        return fail("no node stored the record")
    return EXIT_OK


def _next(seed: bytes, value: bytes, last: int | None, found: MutableRecord | None, keyfile: Path) -> MutableRecord:
    """Sign the next sequence: one above the key file's last and the network's newest.

    The key file records the sequence before it is sent, so one sequence
    never goes out with two values (nodes would refuse the second as
    ``sequence_conflict``).
    """
    seq = max(-1 if last is None else last, -1 if found is None else found.seq) + 1
    if found is not None and found.value == value and (last is None or found.seq >= last):
        seq = found.seq  # the same value again: republish it, no new version
    record = sign_mutable(seed, seq, value)
    write_key_file(keyfile, seed, seq)
    return record
