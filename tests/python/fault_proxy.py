"""A Kafka-aware TCP proxy on loopback that loses responses, for retry tests.

Clients reach the broker through it (the broker advertises the proxy's address). It forwards
bytes both ways untouched, but reads the frames: it remembers each request's API key by
correlation id, and when a response to a chosen API is due it can drop it and close the
connection instead, after the broker has acted on the request. That is the case idempotent
producers exist for: the write happened, the client never heard, and it sends the batch again.
"""

from __future__ import annotations

import socket
import struct
import threading


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_frame(sock: socket.socket) -> bytes | None:
    size = _read_exact(sock, 4)
    if size is None:
        return None
    (length,) = struct.unpack(">i", size)
    if length < 0 or length > 200 * 1024 * 1024:
        return None
    body = _read_exact(sock, length)
    return None if body is None else size + body


class FaultProxy:
    """Drops every `every`-th response to `api_key` (0 = Produce), at most `max_drops` times."""

    def __init__(self, upstream_port: int, api_key: int = 0, every: int = 5, max_drops: int = 20):
        self.upstream_port = upstream_port
        self.api_key = api_key
        self.every = every
        self.max_drops = max_drops
        self.seen = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.closed.set()
        for s in [self.listener, *self.sockets]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            pending: dict[int, int] = {}
            threading.Thread(target=self._requests, args=(client, upstream, pending), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, pending), daemon=True).start()

    @staticmethod
    def _shut(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _requests(self, client, upstream, pending) -> None:
        while True:
            frame = _read_frame(client)
            if frame is None or len(frame) < 12:
                return self._shut(client, upstream)
            api_key, _version, correlation = struct.unpack(">hhi", frame[4:12])
            pending[correlation] = api_key
            try:
                upstream.sendall(frame)
            except OSError:
                return self._shut(client, upstream)

    def _responses(self, upstream, client, pending) -> None:
        while True:
            frame = _read_frame(upstream)
            if frame is None or len(frame) < 8:
                return self._shut(client, upstream)
            (correlation,) = struct.unpack(">i", frame[4:8])
            if pending.pop(correlation, None) == self.api_key:
                with self.lock:
                    self.seen += 1
                    drop = self.seen % self.every == 0 and self.dropped < self.max_drops
                    if drop:
                        self.dropped += 1
                if drop:
                    return self._shut(client, upstream)
            try:
                client.sendall(frame)
            except OSError:
                return self._shut(client, upstream)
