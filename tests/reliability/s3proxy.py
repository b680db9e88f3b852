"""A TCP proxy in front of the moto S3 server that can play an outage: it stops listening and drops every open
connection, then comes back on the same port (moto itself would lose its data if restarted).

An outage starts on demand or when a request matching a pattern passes (e.g. the align step's GET of one item's
audio), so it lands at a known point of a batch. A request can also be cut mid-body: the proxy forwards its
headers and part of its body, then resets both connections, as a network that drops in the middle of an upload.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time


class OutageProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._trigger: re.Pattern[bytes] | None = None
        self._trigger_outage_s: float | None = None
        self.outages: list[tuple[float, float | None]] = []  # (started, ended) monotonic times
        self.triggered_by: bytes | None = None
        self._cut: tuple[re.Pattern[bytes], int, float | None] | None = None
        self.cut_request: bytes | None = None
        self.cut_after_body_bytes: int | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self._listener is not None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> OutageProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Refuse new connections and drop open ones, as a crashed server would."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for conn in connections:
            _close(conn)

    def outage(self, seconds: float | None) -> None:
        """Stop now; come back after ``seconds`` (None: stay down until :meth:`restore`)."""
        self.stop()
        self.outages.append((time.monotonic(), None))
        if seconds is not None:
            timer = threading.Timer(seconds, self.restore)
            timer.daemon = True
            timer.start()

    def restore(self) -> None:
        if self.up:
            return
        self.start()
        started, _ = self.outages[-1]
        self.outages[-1] = (started, time.monotonic())

    def fail_when(self, pattern: bytes, outage_s: float | None) -> None:
        """Start an outage the first time a request matching ``pattern`` (a regex on the raw bytes) arrives; that
        request is dropped, never forwarded."""
        self._trigger = re.compile(pattern)
        self._trigger_outage_s = outage_s

    def cut_when(self, pattern: bytes, body_bytes: int, outage_s: float | None = 0.0) -> None:
        """The first request matching ``pattern`` gets its headers and ``body_bytes`` of its body forwarded, then
        both connections are reset (RST) and an outage of ``outage_s`` follows (0: none, None: until restored)."""
        self._cut = (re.compile(pattern), body_bytes, outage_s)

    # -- plumbing ----------------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    _close(client)
                    _close(upstream)
                    return
                self._connections.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        body_budget: int | None = None  # body bytes still to forward before the cut, once armed
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_client and body_budget is None and self._cut is not None and self._cut[0].search(data):
                    pattern, body_budget, cut_outage_s = self._cut
                    self._cut = None
                    self.cut_request = data.split(b"\r\n", 1)[0]
                    head_end = data.find(b"\r\n\r\n")
                    sink.sendall(data[:head_end + 4])
                    data = data[head_end + 4:]
                    self.cut_after_body_bytes = 0
                if from_client and body_budget is not None:
                    forward = data[:body_budget]
                    sink.sendall(forward)
                    body_budget -= len(forward)
                    self.cut_after_body_bytes += len(forward)
                    if body_budget > 0:
                        continue
                    _reset(source)
                    _reset(sink)
                    if cut_outage_s != 0:
                        self.outage(cut_outage_s)
                    return
                if from_client and self._trigger is not None and self._trigger.search(data):
                    self._trigger = None
                    self.triggered_by = data.split(b"\r\n", 1)[0]
                    self.outage(self._trigger_outage_s)
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)
            with self._lock:
                self._connections.discard(source)
                self._connections.discard(sink)


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN, as a dropped network link looks to both ends."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
