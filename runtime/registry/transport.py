"""The registry client's transport: which scheme a registry gets, bounded waits, bounded reads, retry policy.

Why a module of its own: a hostile or broken server must cost a bounded time and a bounded amount of memory
whatever it does, and those bounds are the same for every request the client makes:

* scheme: docker's rule - ``localhost`` and 127.0.0.0/8 (and ::1) registries may be spoken to in plain HTTP; others
  only when listed as insecure, in ``REFRT_INSECURE_REGISTRIES`` (comma-separated ``host[:port]`` or CIDR) or in
  the ``insecure-registries`` list of the daemon configuration file (``REFRT_DAEMON_CONFIG``, default
  ``/etc/refrt/daemon.json``, docker's key name);
* waits: a connect timeout (``REFRT_REGISTRY_CONNECT_TIMEOUT``, default 15 s) and a read timeout
  (``REFRT_REGISTRY_TIMEOUT``, default 30 s). The read timeout is enforced as a low-speed limit, not per
  ``recv``: in every window of that many seconds at least ``LOW_SPEED_BYTES`` must arrive (a server trickling one
  byte every 20 s never trips a per-recv timeout, and would otherwise hold a pull forever);
* reads: error bodies are read up to ``MAX_ERROR_BODY`` bytes, and a body is drained for keep-alive only when it
  is small; otherwise the connection is closed instead of reading a gigabyte nobody wants;
* retries: ``REFRT_REGISTRY_RETRIES`` (default 3) further attempts, with exponential backoff, for idempotent
  requests that met a 5xx/429 answer or a dropped connection.
"""

from __future__ import annotations

import codecs
import http.client
import io
import ipaddress
import json
import os
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from runtime.errors import RefrtError, UsageError

# http.client encodes host names with the IDNA codec, which imports stringprep and unicodedata on first use: done
# here, at import, so the daemon's preloaded workers do not pay for it in every pull and push.
codecs.lookup("idna")

INSECURE_ENV = "REFRT_INSECURE_REGISTRIES"
DAEMON_CONFIG_ENV = "REFRT_DAEMON_CONFIG"
DEFAULT_DAEMON_CONFIG = "/etc/refrt/daemon.json"
TIMEOUT_ENV = "REFRT_REGISTRY_TIMEOUT"
CONNECT_TIMEOUT_ENV = "REFRT_REGISTRY_CONNECT_TIMEOUT"
RETRIES_ENV = "REFRT_REGISTRY_RETRIES"
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_RETRIES = 3
#: First backoff before a retry; doubled each time, and a server's Retry-After is honoured up to MAX_BACKOFF.
BACKOFF = 0.25
MAX_BACKOFF = 8.0
#: Fewer bytes than this in one read-timeout window is a stalled transfer.
LOW_SPEED_BYTES = 1024
#: How much of an error answer is read: enough for the distribution error JSON, never the whole of a huge body.
MAX_ERROR_BODY = 4096
#: A body left unread is drained (to keep the connection) only up to this size; beyond, the connection is closed.
DRAIN_LIMIT = 64 << 10
#: Answers that are worth another try of an idempotent request.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: http.client's buffer for sending file bodies.
BLOCK = 1 << 20
#: The buffered reader under an answer. Small on purpose: a read larger than it goes straight from the socket into
#: the caller's buffer (a blob's 512 KiB chunks), where a read up to its size is copied through it first.
RESPONSE_BUFFER = 64 << 10


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise UsageError(f"invalid {name} {raw!r}: want a number of seconds greater than 0")
    return value


@dataclass(frozen=True)
class Policy:
    """Timeouts and retries for one client; ``from_env`` reads the environment once, at the client's start."""

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES

    @classmethod
    def from_env(cls) -> Policy:
        raw = os.environ.get(RETRIES_ENV, "").strip()
        if raw and not (raw.isdigit() and int(raw) <= 20):
            raise UsageError(f"invalid {RETRIES_ENV} {raw!r}: want a whole number from 0 to 20")
        return cls(
            connect_timeout=_seconds(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT),
            timeout=_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT),
            retries=int(raw) if raw else DEFAULT_RETRIES,
        )

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        wait = BACKOFF * 2.0**attempt
        if retry_after and retry_after.strip().isdigit():
            wait = max(wait, float(retry_after.strip()))
        return min(wait, MAX_BACKOFF)


# -- which registries may be spoken to in plain HTTP ---------------------------------------------------------------
def _configured_insecure() -> list[str]:
    """Entries of ``insecure-registries`` in the daemon configuration file (none when there is no file)."""
    path = os.environ.get(DAEMON_CONFIG_ENV) or DEFAULT_DAEMON_CONFIG
    try:
        with open(path, "rb") as f:
            data: Any = json.loads(f.read(1 << 20))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise RefrtError(f"cannot read the daemon configuration {path}: {exc}") from None
    entries = data.get("insecure-registries", []) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise RefrtError(f"daemon configuration {path}: insecure-registries must be a list of strings")
    return entries


def is_insecure(domain: str) -> bool:
    """Plain HTTP is allowed for loopback registries and the ones configured insecure."""
    host = urllib.parse.urlsplit(f"//{domain}").hostname or domain
    if host == "localhost":
        return True
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    entries = os.environ.get(INSECURE_ENV, "").split(",") + _configured_insecure()
    for entry in entries:
        entry = entry.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
        if not entry:
            continue
        if entry in (domain, host):
            return True
        try:
            if "/" in entry and ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


# -- sockets with a low-speed limit ---------------------------------------------------------------------------------
class StalledError(TimeoutError):
    """Fewer than ``LOW_SPEED_BYTES`` arrived in one read-timeout window."""


class _PacedReader(io.RawIOBase):
    """The raw reader under an answer's buffer: every ``recv`` waits at most until the end of the current window,
    and a window that ends with fewer than ``LOW_SPEED_BYTES`` is a :class:`StalledError`."""

    def __init__(self, sock: socket.socket, window: float, socket_file: io.RawIOBase) -> None:
        super().__init__()
        self._sock = sock
        # The socket file http.client made: held (not read) because it counts as a user of the socket, so a
        # connection closed while this answer is being read keeps its descriptor until the answer is closed.
        self._socket_file = socket_file
        self._window = window
        self._start = time.monotonic()
        self._bytes = 0
        self._timeout = -1.0  # the socket's timeout as this reader last set it

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        super().close()
        self._socket_file.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def readinto(self, buffer: Any) -> int:
        while True:
            now = time.monotonic()
            elapsed = now - self._start
            if elapsed >= self._window:
                if self._bytes < LOW_SPEED_BYTES:
                    got = "no answer" if self._bytes == 0 else f"only {self._bytes} bytes"
                    raise StalledError(f"{got} in {self._window:g} s (timeout)")
                self._start, self._bytes = now, 0
                continue
            # A recv waits at most until the window ends (give or take a twentieth of it): the timeout is set again
            # only when it would overshoot by more than that, not before every recv (a syscall each time).
            remaining = self._window - elapsed
            if not remaining - self._window / 20 <= self._timeout <= remaining + self._window / 20:
                self._sock.settimeout(remaining)
                self._timeout = remaining
            try:
                n = self._sock.recv_into(buffer)
            except TimeoutError:
                continue
            self._bytes += n
            return n


class _PacedResponse(http.client.HTTPResponse):
    """An answer read through :class:`_PacedReader` (the window is the connection's read timeout)."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: str | None = None):
        super().__init__(sock, debuglevel, method, url)
        window = sock.gettimeout() or DEFAULT_TIMEOUT
        socket_file = self.fp.detach()
        assert isinstance(socket_file, io.RawIOBase)
        self.fp = io.BufferedReader(_PacedReader(sock, window, socket_file), RESPONSE_BUFFER)


class PacedHTTPConnection(http.client.HTTPConnection):
    """Connects within ``connect_timeout``; answers are read under the low-speed limit of ``timeout``."""

    response_class = _PacedResponse

    def __init__(self, netloc: str, policy: Policy) -> None:
        super().__init__(netloc, timeout=policy.connect_timeout, blocksize=BLOCK)
        self.policy = policy

    def connect(self) -> None:
        self.timeout = self.policy.connect_timeout
        super().connect()
        self.sock.settimeout(self.policy.timeout)


class PacedHTTPSConnection(http.client.HTTPSConnection):
    """The TLS twin of :class:`PacedHTTPConnection` (the handshake is part of the connect time)."""

    response_class = _PacedResponse

    def __init__(self, netloc: str, policy: Policy, context: Any) -> None:
        super().__init__(netloc, timeout=policy.connect_timeout, context=context, blocksize=BLOCK)
        self.policy = policy

    def connect(self) -> None:
        self.timeout = self.policy.connect_timeout
        super().connect()
        self.sock.settimeout(self.policy.timeout)


def read_bounded(resp: http.client.HTTPResponse, limit: int = MAX_ERROR_BODY) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of a body, and whether the body was read to its end (the connection reusable)."""
    data = resp.read(limit) if limit else b""
    if resp.isclosed():
        return data, True
    length = resp.length
    if length is not None and length <= DRAIN_LIMIT:
        try:
            resp.read()
            return data, True
        except (OSError, http.client.HTTPException):
            return data, False
    return data, False
