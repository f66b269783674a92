"""Shared fixtures. Integration tests need a running hub: set SWITCH_TEST_URL (e.g.
http://127.0.0.1:18080) and SWITCH_TEST_JWT_SECRET; without SWITCH_TEST_URL they are skipped."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

import pytest

from switch_sdk import Client, Id, Subscriber, SwitchError

T = TypeVar("T")

HUB_URL = os.environ.get("SWITCH_TEST_URL", "").strip()
HUB_SECRET = os.environ.get("SWITCH_TEST_JWT_SECRET", "")

needs_hub = pytest.mark.skipif(not HUB_URL, reason="SWITCH_TEST_URL is not set (no running hub)")


def wait_for(
    probe: Callable[[], Optional[T]], timeout: float = 20.0, interval: float = 0.2, what: str = ""
) -> T:
    """Call ``probe`` until it returns something other than None/False, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what or 'a condition'}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def hub_url() -> str:
    if not HUB_URL:
        pytest.skip("SWITCH_TEST_URL is not set (no running hub)")
    return HUB_URL


@pytest.fixture(scope="session")
def hub_secret(hub_url: str) -> str:
    if not HUB_SECRET:
        pytest.fail("SWITCH_TEST_URL is set but SWITCH_TEST_JWT_SECRET is not")
    return HUB_SECRET


@pytest.fixture
def admin(hub_url: str, hub_secret: str) -> Iterator[Client]:
    """A client allowed to publish and administer."""
    with Client(
        hub_url, jwt_secret=hub_secret, author="sdk-python-tests", scope="publish admin"
    ) as client:
        yield client


@pytest.fixture
def new_subscriber(admin: Client) -> Iterator[Callable[..., Subscriber]]:
    """Creates subscribers through the admin API and deletes them after the test."""
    created: List[Id] = []

    def create(topic: str, target_url: str, **kwargs: Any) -> Subscriber:
        sub = admin.subscribers.create(topic, target_url, **kwargs)
        created.append(sub.id)
        return sub

    yield create
    for sub_id in created:
        try:
            admin.subscribers.delete(sub_id)
        except SwitchError:
            pass


@pytest.fixture
def topic() -> str:
    """A topic no other test (or test run) uses."""
    return f"sdkpy.{uuid.uuid4().hex[:16]}.created"


@dataclass
class Received:
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP server standing in for a subscriber's endpoint."""

    url: str
    requests: List[Received] = field(default_factory=list)
    #: Status to answer per path (default 200).
    statuses: Dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, path_prefix: str = "/") -> List[Received]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def wait(self, path_prefix: str, count: int = 1, timeout: float = 20.0) -> List[Received]:
        return wait_for(
            lambda: (lambda got: got if len(got) >= count else None)(self.received(path_prefix)),
            timeout=timeout,
            what=f"{count} webhook(s) at {self.url}{path_prefix}",
        )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: Dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            rec = box["r"]
            with rec.lock:
                rec.requests.append(
                    Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status = next(
                    (s for p, s in rec.statuses.items() if self.path.startswith(p)), 200
                )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    box["r"] = Receiver(url=f"http://127.0.0.1:{port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box["r"]
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of the hub, whose connections a test can cut.

    ``requests`` holds the first bytes each client sent (the request head); while
    ``refuse`` is set, new connections are closed as soon as they are accepted.
    """

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: List[bytes] = []
        self.refuse = False
        self._pairs: List[Tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                index = len(self.requests)
                self.requests.append(b"")
            threading.Thread(target=self._pipe, args=(client, upstream, index), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, index: Optional[int]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if index is not None and len(self.requests[index]) < 8192:
                    with self._lock:
                        self.requests[index] += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every open connection, as a network failure would."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()


@pytest.fixture
def proxy(hub_url: str) -> Iterator[Proxy]:
    p = Proxy(hub_url)
    try:
        yield p
    finally:
        p.close()
