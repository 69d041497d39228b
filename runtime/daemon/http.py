"""The daemon's HTTP layer: the standard library's server on a unix socket, speaking what docker's clients expect.

Everything Engine-API specific sits in the ``api_*`` modules; this module only knows HTTP/1.1 as docker uses it:

- Routes are ``(METHOD, pattern, handler)`` triples; a pattern is a path with ``{name}`` placeholders (a
  placeholder matches one segment, ``{name:path}`` the rest of the path, for image names with slashes). A path
  may carry a ``/vX.Y`` prefix; the version is kept on the request, and a version newer than ours is refused as
  dockerd refuses it.
- A handler takes a :class:`Request` and returns a :class:`Response` (JSON or bytes), or returns ``None`` after
  it wrote the answer itself: streamed (chunked) answers through :meth:`Request.stream`, or a hijacked connection
  (``attach``, ``exec start``) through :meth:`Request.hijack`.
- Errors are :class:`ApiError` (status + message); a :class:`runtime.errors.RefrtError` escaping a handler is
  mapped by its kind (404 for not found, 409 for conflicts, 400 for bad input, 500 otherwise). The body is
  docker's ``{"message": ...}``.
- Request bodies may be chunked (docker's CLI sends build contexts and image tars that way); :meth:`Request.body`
  and :meth:`Request.reader` decode them.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import socketserver
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from runtime.errors import ConflictError, NotFoundError, RefrtError, UsageError

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"
_VERSION_PREFIX = re.compile(r"^/v(\d+\.\d+)(/.*)$")


class ApiError(Exception):
    """An answer other than success: ``status`` and docker's one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_for(exc: RefrtError) -> int:
    """The HTTP status dockerd gives the same kind of failure."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, UsageError):
        return 400
    return 500


@dataclass
class Response:
    """A complete answer. ``body`` is JSON-encoded unless it is bytes (then ``content_type`` says what it is)."""

    body: Any = None
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode() + b"\n"


class _ChunkedReader:
    """A file-like reader that undoes ``Transfer-Encoding: chunked``."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self._raw = raw
        self._left = 0
        self._done = False

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while not self._done and (size < 0 or len(out) < size):
            if self._left == 0:
                line = self._raw.readline(1024)
                if not line:
                    raise ApiError(400, "request body ended inside a chunk header")
                self._left = int(line.split(b";")[0].strip() or b"0", 16)
                if self._left == 0:
                    while self._raw.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._done = True
                    break
            want = self._left if size < 0 else min(self._left, size - len(out))
            data = self._raw.read(want)
            if not data:
                raise ApiError(400, "request body ended inside a chunk")
            out += data
            self._left -= len(data)
            if self._left == 0:
                self._raw.readline(16)  # the CRLF after the chunk
        return bytes(out)


class _LengthReader:
    def __init__(self, raw: io.BufferedIOBase, length: int) -> None:
        self._raw = raw
        self._left = length

    def read(self, size: int = -1) -> bytes:
        want = self._left if size < 0 else min(size, self._left)
        data = self._raw.read(want) if want else b""
        self._left -= len(data)
        return data


class Request:
    """One request: parsed path and query, the body on demand, and the ways to answer by hand."""

    def __init__(self, handler: _Handler, method: str, path: str, version: str, params: dict[str, str]) -> None:
        self.handler = handler
        self.method = method
        self.path = path
        self.version = version
        self.params = params  # placeholders of the route
        split = urlsplit(handler.path)
        self.query: dict[str, list[str]] = parse_qs(split.query, keep_blank_values=True)
        self.headers = handler.headers
        self._reader: Any = None
        self.answered = False

    # -- input -------------------------------------------------------------------------------------------------
    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.arg(name)
        if value is None:
            return default
        return value.lower() in ("1", "true", "yes")

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value in (None, ""):
            return default
        try:
            return int(value)
        except ValueError:
            raise ApiError(400, f"invalid value for {name}: {value!r}") from None

    def json_arg(self, name: str) -> Any:
        """A query parameter that carries JSON (docker's ``filters``, ``buildargs``, ``labels``)."""
        value = self.arg(name)
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, f"invalid JSON in {name}") from None

    def reader(self) -> Any:
        """The request body as a file-like object with ``read(size)`` (chunked or with a length)."""
        if self._reader is None:
            raw = self.handler.rfile
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                self._reader = _ChunkedReader(raw)
            else:
                self._reader = _LengthReader(raw, int(self.headers.get("Content-Length") or 0))
        return self._reader

    def body(self, limit: int = 64 * 1024 * 1024) -> bytes:
        data: bytes = self.reader().read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
        return data

    def json(self) -> Any:
        data = self.body()
        if not data.strip():
            return {}
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON body: {exc}") from None

    # -- output by hand ----------------------------------------------------------------------------------------
    def stream(self, chunks: Iterable[bytes], content_type: str = "application/json", status: int = 200,
               headers: dict[str, str] | None = None) -> None:
        """Answer with a chunked body, one chunk per item, flushed as it comes (progress, logs, events, stats)."""
        self.answered = True
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_common_headers()
        h.end_headers()
        try:
            for chunk in chunks:
                if chunk:
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def hijack(self, content_type: str = "application/vnd.docker.raw-stream") -> socket.socket:
        """Take over the connection (docker's attach and exec start): answer 101 (or 200 for clients that did not
        ask to upgrade) and return the raw socket. The handler uses it until it returns (it may ``shutdown`` one
        direction); the server closes it after the handler returns."""
        self.answered = True
        h = self.handler
        upgrade = "upgrade" in (self.headers.get("Connection") or "").lower()
        if upgrade:
            h.send_response(101, "UPGRADED")
            h.send_header("Connection", "Upgrade")
            h.send_header("Upgrade", self.headers.get("Upgrade") or "tcp")
        else:
            h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_common_headers()
        h.end_headers()
        h.wfile.flush()
        h.close_connection = True
        sock: socket.socket = h.connection
        h.hijacked = True
        return sock


Handler = Callable[[Request], "Response | None"]


class Router:
    """Maps ``(method, path)`` to a handler; patterns are compiled once."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.sub(r"\{(\w+):path\}", r"(?P<\1>.+)", pattern)
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex)
        self._routes.append((method, re.compile(f"^{regex}$"), handler))

    def add_all(self, routes: Iterable[tuple[str, str, Handler]]) -> None:
        for method, pattern, handler in routes:
            self.add(method, pattern, handler)

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for route_method, regex, handler in self._routes:
            found = regex.match(path)
            if found:
                if route_method == method:
                    return handler, {k: unquote(v) for k, v in found.groupdict().items()}
                allowed = True
        if allowed:
            raise ApiError(405, f"method {method} not allowed for {path}")
        raise ApiError(404, f"page not found: {path}")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "refrt"
    server: UnixHTTPServer
    hijacked = False

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write("refrt daemon: " + (format % args) + "\n")

    def send_common_headers(self) -> None:
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Docker-Experimental", "false")
        self.send_header("Ostype", "linux")
        self.send_header("Server", f"refrt/{_runtime_version()} (linux)")

    def send_answer(self, response: Response) -> None:
        body = response.encoded()
        self.send_response(response.status)
        if response.status != 204:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_common_headers()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        version = API_VERSION
        prefixed = _VERSION_PREFIX.match(path)
        request: Request | None = None
        try:
            if prefixed:
                version, path = prefixed.group(1), prefixed.group(2)
                if _version_tuple(version) > _version_tuple(API_VERSION):
                    raise ApiError(400, f"client version {version} is too new. "
                                        f"Maximum supported API version is {API_VERSION}")
            handler, params = self.server.router.match("GET" if self.command == "HEAD" else self.command, path)
            request = Request(self, self.command, path, version, params)
            response = handler(request)
            if response is not None and not request.answered:
                self.send_answer(response)
        except ApiError as exc:
            self._error(request, exc.status, exc.message)
        except RefrtError as exc:
            self._error(request, status_for(exc), str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a daemon answers 500 and keeps serving
            if self.server.verbose:
                traceback.print_exc()
            self._error(request, 500, f"{type(exc).__name__}: {exc}")
        finally:
            if request is not None and not self.hijacked and request._reader is not None:
                self.close_connection = self.close_connection or not _drained(request)

    def _error(self, request: Request | None, status: int, message: str) -> None:
        if request is not None and request.answered:
            self.close_connection = True  # too late for a status line: the client sees the stream end
            return
        self.send_answer(Response({"message": message}, status=status))

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch  # the base class dispatches on these names

    def finish(self) -> None:
        if self.hijacked:
            return  # the stream was the hijacker's; the server closes the socket
        super().finish()


def _drained(request: Request) -> bool:
    """Whether the rest of the body could be skipped, so the connection can serve the next request."""
    try:
        while request.reader().read(65536):
            pass
        return True
    except (ApiError, OSError):
        return False


def _runtime_version() -> str:
    import runtime

    return runtime.__version__


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """One thread per connection; daemon threads so a stuck client never blocks shutdown."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str, router: Router, *, verbose: bool = False) -> None:
        self.router = router
        self.verbose = verbose
        super().__init__(path, _Handler, bind_and_activate=False)
        old = os.umask(0o177)
        try:
            self.server_bind()
        finally:
            os.umask(old)
        self.server_activate()


def iter_json_lines(items: Iterable[Any]) -> Iterator[bytes]:
    """Docker's streamed JSON: one object per line (pull/push/build progress, events, stats)."""
    for item in items:
        yield json.dumps(item).encode() + b"\n"
