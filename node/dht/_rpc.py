"""Our outgoing requests: rpcudp datagrams with a deadline each (specs/dht.md §4 Wire format).

``RpcClient`` sends a request on the node's UDP socket and waits for the
reply, which the node's receive loop hands to :meth:`RpcClient.on_response`
(matched by message ID and source address).  At most
``MAX_OUTSTANDING_REQUESTS`` wait at once (specs/dht.md §2 Conventions and
definitions).

An address that let a request time out is *silent* for ``SILENT_SECONDS``
(at most ``MAX_SILENT`` remembered): requests to it fail at once instead of
each waiting out the timeout again, so a dead node that other nodes still
return in lookups costs one timeout, not one per lookup.  Any datagram from
the address ends it (specs/dht.md §6 Lookups, "Silent addresses").

A request its caller stopped waiting for (a lookup that ended without a slow
answer, specs/dht.md §6 "Slow requests") still counts: if nothing comes
from its address within ``request_timeout`` of sending it, the next request
to that address finds it silent, exactly as if the first had been waited
out.  So a lookup need not wait out a dead node to have it known as dead,
and a live node, however slow, is never taken for dead sooner than by
waiting.

A node whose process is gone while its host is up answers nothing, but its
host does: an ICMP port (or host) unreachable error that quotes our
datagram.  ``read_icmp_errors`` takes those from the socket's error queue
(Linux ``IP_RECVERR``) and fails the request whose message ID the quoted
datagram carries at once, with the address silent as after a timeout.  Only
a request's own random ID counts, so nobody off the path can fail a request
this way (specs/dht.md §6 Lookups, "Unreachable addresses").
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket
import struct
import sys
from dataclasses import dataclass

import trio

from protocol.kademlia.wire import (
    MESSAGE_ID_SIZE,
    PING,
    LocalProtocolError,
    RemoteProtocolError,
    Response,
    encode_request,
    parse_node_id_reply,
)

log = logging.getLogger("mu.dht")

#: Requests of ours awaiting a reply at once (specs/dht.md §2).
MAX_OUTSTANDING_REQUESTS = 1024
#: Seconds an address that let a request time out is not asked again (specs/dht.md §2).
SILENT_SECONDS = 30.0
#: Silent addresses remembered at once, oldest forgotten first (specs/dht.md §2).
MAX_SILENT = 1024


#: ``errno`` values of an ICMP error that say nothing at the address took the datagram.
UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})
# Linux's socket options for the error queue (<linux/in.h>, <linux/in6.h>)
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err


def ask_for_icmp_errors(sock: socket.socket) -> bool:
    """Have ICMP errors for ``sock``'s datagrams queued for ``read_icmp_errors`` (Linux only); True if set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
    except OSError:
        return False
    return True


def _unreachable(ancillary: list[tuple[int, int, bytes]]) -> bool:
    for level, kind, data in ancillary:
        if ((level, kind) in ((socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR))
                and len(data) >= _EXTENDED_ERR.size):
            return _EXTENDED_ERR.unpack_from(data)[0] in UNREACHABLE_ERRNOS
    return False


class NoReply(Exception):
    """A request timed out or its reply could not be parsed."""


@dataclass(slots=True)
class _Pending:
    address: tuple[str, int]
    done: trio.Event
    value: object = None
    unreachable: bool = False  # an ICMP error quoting this request came back


class RpcClient:
    """Sends requests from ``node_id`` on ``sock`` and matches their replies.

    Args:
        sock: the node's bound UDP socket (shared with the receive loop).
        node_id: our ID, the first argument of every request.
        request_timeout: seconds a request waits for its reply.
    """

    def __init__(self, sock: trio.socket.SocketType, node_id: bytes, request_timeout: float, *,
                 errors: socket.socket | None = None) -> None:
        self.sock = sock
        self.errors = errors  # the socket under ``sock`` when it queues ICMP errors (``ask_for_icmp_errors``)
        self.node_id = node_id
        self.request_timeout = request_timeout
        self._pending: dict[bytes, _Pending] = {}
        self._silent: dict[tuple[str, int], float] = {}  # address -> when it may be asked again
        # address -> when the oldest request to it that nobody waits for any more was sent
        self._abandoned: dict[tuple[str, int], float] = {}

    def heard_from(self, address: tuple[str, int]) -> None:
        """A datagram came from ``address``: it is not silent."""
        self._silent.pop(address, None)
        self._abandoned.pop(address, None)

    def _abandon(self, address: tuple[str, int], sent_at: float) -> None:
        """Remember the first request to ``address`` left unanswered by a caller that stopped waiting."""
        if address in self._abandoned or address in self._silent:
            return
        while len(self._abandoned) >= MAX_SILENT:
            del self._abandoned[next(iter(self._abandoned))]
        self._abandoned[address] = sent_at

    def _silent_until(self, address: tuple[str, int]) -> float | None:
        sent_at = self._abandoned.get(address)
        if sent_at is not None and trio.current_time() - sent_at >= self.request_timeout:
            self._fell_silent(address)  # unanswered for a whole request timeout, waited for or not
        until = self._silent.get(address)
        if until is not None and trio.current_time() >= until:
            del self._silent[address]
            return None
        return until

    def _fell_silent(self, address: tuple[str, int]) -> None:
        self._abandoned.pop(address, None)
        self._silent.pop(address, None)
        while len(self._silent) >= MAX_SILENT:
            del self._silent[next(iter(self._silent))]
        self._silent[address] = trio.current_time() + SILENT_SECONDS

    async def call(self, address: tuple[str, int], name: str, args: list[object]) -> object:
        """Send ``name(*args)`` to ``address`` and return the reply value.

        Raises:
            NoReply: no reply within ``request_timeout``, the address is silent
                (module docstring) or too many requests pending.
        """
        if self._silent_until(address) is not None:
            raise NoReply(f"{name} to {address[0]}:{address[1]} not sent: it did not answer "
                          f"within the last {SILENT_SECONDS:g} s")
        if len(self._pending) >= MAX_OUTSTANDING_REQUESTS:
            raise NoReply(f"{MAX_OUTSTANDING_REQUESTS} requests already outstanding")
        msg_id = secrets.token_bytes(MESSAGE_ID_SIZE)
        try:
            datagram = encode_request(msg_id, name, args)
        except LocalProtocolError as exc:
            raise NoReply(str(exc)) from None
        pending = _Pending(address, trio.Event())
        self._pending[msg_id] = pending
        sent_at: float | None = None
        try:
            try:
                await self.send(datagram, address)
            except OSError as exc:
                raise NoReply(f"send to {address} failed: {exc}") from None
            sent_at = trio.current_time()
            with trio.move_on_after(self.request_timeout):
                await pending.done.wait()
        finally:
            del self._pending[msg_id]
            if sent_at is not None and not pending.done.is_set():
                self._abandon(address, sent_at)  # cancelled, or timed out: the latter is silent below
        if not pending.done.is_set():
            self._fell_silent(address)
            raise NoReply(f"{name} to {address[0]}:{address[1]} timed out")
        if pending.unreachable:
            self._fell_silent(address)
            raise NoReply(f"{name} to {address[0]}:{address[1]}: unreachable (ICMP error)")
        return pending.value

    async def send(self, datagram: bytes, address: tuple[str, int]) -> None:
        """Send one datagram on the socket (a request, or a reply of the node's).

        With ICMP errors queued, the socket reports an earlier datagram's
        error on whatever call comes next, a send too: the errors are read
        (``read_icmp_errors``) and the datagram sent once more.

        Raises:
            OSError: the datagram could not be sent.
        """
        try:
            await self.sock.sendto(datagram, address)
        except OSError as exc:
            if self.errors is None or exc.errno not in UNREACHABLE_ERRNOS:
                raise
            self.read_icmp_errors()
            await self.sock.sendto(datagram, address)

    def read_icmp_errors(self) -> int:
        """Take every queued ICMP error from the socket (without waiting) and fail the requests
        they quote (see the module docstring); how many did.

        Called whenever the socket reports an error: while any is queued the
        socket polls as ready, so none may be left behind.
        """
        raw = self.errors
        if raw is None:
            return 0
        failed = 0
        while True:
            try:
                datagram, ancillary, _, address = raw.recvmsg(1 + MESSAGE_ID_SIZE, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return failed
            except OSError as exc:
                log.debug("reading the socket's error queue: %s", exc)
                return failed
            if not _unreachable(ancillary) or not isinstance(address, tuple):
                continue
            pending = self._pending.get(bytes(datagram[1:1 + MESSAGE_ID_SIZE]))
            if pending is None or pending.address != (address[0], address[1]) or pending.done.is_set():
                continue
            pending.unreachable = True
            pending.done.set()
            failed += 1

    async def ping(self, address: tuple[str, int]) -> bytes:
        """Ping ``address``; return its node ID (NoReply on failure)."""
        value = await self.call(address, PING, [self.node_id])
        try:
            return parse_node_id_reply(value)
        except RemoteProtocolError as exc:
            raise NoReply(str(exc)) from None

    def on_response(self, message: Response, address: tuple[str, int]) -> None:
        """Wake the caller waiting for ``message`` (dropped if nobody from ``address`` is)."""
        pending = self._pending.get(message.msg_id)
        if pending is None or pending.address != address or pending.done.is_set():
            log.warning("dropping unsolicited response from %s:%d", address[0], address[1])
            return
        pending.value = message.value
        pending.done.set()
