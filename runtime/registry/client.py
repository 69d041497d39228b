"""HTTP client for one registry, speaking the OCI distribution API (``/v2/``) with http.client only.

What it takes care of, so ``push`` and ``pull`` read like the protocol:

* scheme: HTTPS with certificate checks, except for insecure registries (loopback, or configured insecure: see
  :mod:`runtime.registry.transport`), which are spoken to in plain HTTP (HTTPS without checks if they only speak
  TLS - tried only when the plain HTTP attempt met something other than HTTP, never after a timeout);
* bounds (:mod:`runtime.registry.transport`): connect and read timeouts, bounded error bodies, retries with backoff
  of idempotent requests on 5xx/429 and dropped connections;
* authentication: the challenge of ``GET /v2/`` decides - Basic credentials on every request, or Bearer tokens
  fetched from the realm per set of scopes, refreshed once when a 401 names a new scope;
* keep-alive: one connection per host, reopened once when the server has closed an idle one;
* redirects (blob downloads may be sent to a storage backend): followed, but ``Authorization`` never leaves the
  registry's own scheme://host:port;
* error answers: turned into the one-line errors of :mod:`runtime.registry.errors`, naming the URL and status.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from runtime.registry.auth import Challenge, Credentials, parse_challenges
from runtime.registry.errors import (
    AuthenticationError,
    ConnectionDroppedError,
    ConnectionFailedError,
    DeniedError,
    ManifestNotFoundError,
    RegistryError,
    RegistryTimeoutError,
    ServerError,
    TransferStopped,
)
from runtime.registry.transport import (
    INSECURE_ENV,
    MAX_ERROR_BODY,
    RETRY_STATUSES,
    PacedHTTPConnection,
    PacedHTTPSConnection,
    Policy,
    is_insecure,
    read_bounded,
)

__all__ = ["INSECURE_ENV", "MAX_MANIFEST_SIZE", "RegistryClient", "Response", "is_insecure"]

USER_AGENT = "refrt/0.1"
MAX_REDIRECTS = 5
#: Manifests are read into memory: a registry answering with more than this is refused, not believed.
MAX_MANIFEST_SIZE = 4 << 20
#: A token server's answer is a small JSON document.
MAX_TOKEN_ANSWER = 1 << 20
#: Transport failures that mean "the server closed or reset the connection".
_DROPPED = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    http.client.IncompleteRead,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)

Body = bytes | BinaryIO | None


@dataclass
class Response:
    """An answer whose body is left to stream (``stream``); ``conn`` is closed when the body is not read out."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    url: str
    stream: http.client.HTTPResponse
    method: str
    conn: http.client.HTTPConnection

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def read(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """At most ``limit`` bytes of the body; the connection is closed unless the body was read to its end."""
        data, whole = read_bounded(self.stream, limit)
        if not whole:
            self.conn.close()
        return data

    def drain(self) -> None:
        """Make the connection reusable: read a small rest of the body, else close the connection."""
        self.read(0)

    def describe(self) -> str:
        return f"{self.status} {self.reason} to {self.method} {self.url}"


def _rewind(body: Body) -> None:
    if body is not None and not isinstance(body, bytes):
        body.seek(0)


def _error_detail(data: bytes) -> tuple[str, str]:
    """The first error of a distribution error body: (code lower-cased with spaces, message)."""
    try:
        errors = json.loads(data).get("errors") or []
        first = errors[0]
        code = str(first.get("code", "")).lower().replace("_", " ")
        return code, str(first.get("message", ""))[:300]
    except (ValueError, AttributeError, IndexError, TypeError):
        text = data[:200].decode(errors="replace")
        return "", " ".join(text.split())


class RegistryClient:
    """A session with one registry (``domain`` is ``host[:port]``; the endpoint actually dialled)."""

    def __init__(
        self,
        endpoint: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
        self.insecure = is_insecure(endpoint) if insecure is None else insecure
        self.policy = policy or Policy.from_env()
        self.scheme = "http" if self.insecure else "https"
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._challenge: Challenge | None = None
        self._pinged = False
        self._tokens: dict[str, str] = {}
        self._stopped = False

    # -- life cycle -------------------------------------------------------------------------------------------
    def clone(self) -> RegistryClient:
        """A client for another thread: the same registry, scheme, challenge and tokens, its own connections."""
        twin = RegistryClient(self.endpoint, credentials=self.credentials, insecure=self.insecure, policy=self.policy)
        twin.scheme, twin._challenge, twin._pinged = self.scheme, self._challenge, self._pinged
        twin._tokens = dict(self._tokens)
        return twin

    def close(self) -> None:
        for conn in list(self._connections.values()):
            conn.close()
        self._connections.clear()

    def stop(self) -> None:
        """Close the connections (from another thread) and refuse further requests: a transfer under way ends at
        its next read or write, and does not reconnect."""
        self._stopped = True
        for conn in list(self._connections.values()):
            # shutdown, not only close: a read under way in another thread holds the socket open, and wakes here
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        self.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.endpoint}"

    # -- connections ------------------------------------------------------------------------------------------
    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        key = (scheme, netloc)
        conn = self._connections.get(key)
        if conn is None:
            if scheme == "https":
                context = ssl.create_default_context()
                if self.insecure and netloc == self.endpoint:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                conn = PacedHTTPSConnection(netloc, self.policy, context)
            else:
                conn = PacedHTTPConnection(netloc, self.policy)
            self._connections[key] = conn
        return conn

    def _drop_connection(self, scheme: str, netloc: str) -> None:
        conn = self._connections.pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def _transport_error(self, method: str, url: str, exc: BaseException) -> ConnectionFailedError:
        """One line naming the request and what went wrong; TLS is named only for an https URL."""
        netloc = urllib.parse.urlsplit(url).netloc
        request = f"{method} {url}"
        if isinstance(exc, TimeoutError):
            detail = str(exc) if str(exc) not in ("", "timed out") else "timed out"
            if "(timeout)" not in detail:
                detail += " (timeout)"
            return RegistryTimeoutError(f"registry {netloc} did not answer: {request}: {detail}")
        if isinstance(exc, ssl.SSLError) and url.startswith("https:"):
            return ConnectionFailedError(f"TLS with {netloc} failed: {request}: {exc}")
        if isinstance(exc, _DROPPED):
            what = type(exc).__name__ if not str(exc) else str(exc)
            return ConnectionDroppedError(f"connection to {netloc} dropped: {request}: {what}")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return ConnectionFailedError(f"cannot reach registry {netloc}: {request}: {reason}")

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body, *, idempotent: bool) -> Response:
        """One exchange; an idempotent one is tried again (with backoff) after a 5xx/429 or a dropped connection.

        Any request is sent again once, at once, when a kept-alive connection turns out to have been closed by the
        server while idle (it never saw the request).
        """
        parts = urllib.parse.urlsplit(url)
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        attempt = 0
        stale_retried = False
        while True:
            if self._stopped:
                raise TransferStopped(f"{method} {url}: stopped")
            conn = self._connection(parts.scheme, parts.netloc)
            reused = conn.sock is not None
            if reused:
                conn.sock.settimeout(self.policy.timeout)
            try:
                conn.request(method, target, body=body, headers=headers)
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection(parts.scheme, parts.netloc)
                dropped = isinstance(exc, _DROPPED)
                if dropped and reused and not stale_retried:
                    stale_retried = True
                    _rewind(body)
                    continue
                if dropped and idempotent and attempt < self.policy.retries:
                    time.sleep(self.policy.backoff(attempt))
                    attempt += 1
                    _rewind(body)
                    continue
                raise self._transport_error(method, url, exc) from None
            resp = Response(raw.status, raw.reason, raw.headers, url, raw, method, conn)
            if raw.status in RETRY_STATUSES and idempotent and attempt < self.policy.retries:
                resp.drain()
                time.sleep(self.policy.backoff(attempt, resp.header("Retry-After")))
                attempt += 1
                _rewind(body)
                continue
            return resp

    # -- authentication ---------------------------------------------------------------------------------------
    def _ping_once(self) -> Response:
        return self._send("GET", f"{self.base_url}/v2/", self._plain_headers(), None, idempotent=True)

    def ping(self) -> Challenge | None:
        """``GET /v2/``: find out the scheme that works and the auth challenge (None when open)."""
        if self._pinged:
            return self._challenge
        try:
            resp = self._ping_once()
        except ConnectionDroppedError as plain_error:
            if not (self.insecure and self.scheme == "http"):
                raise
            # Something other than HTTP answered: maybe an insecure registry that only speaks TLS. A timeout or a
            # refused connection is not a reason to try TLS, and when TLS fails too the HTTP failure is the one told.
            self.scheme = "https"
            try:
                resp = self._ping_once()
            except ConnectionFailedError:
                self.scheme = "http"
                raise plain_error from None
        data = resp.read()
        if resp.status == 400 and self.scheme == "http" and self.insecure and b"HTTPS" in data:
            # A TLS-only registry answering plain HTTP ("Client sent an HTTP request to an HTTPS server").
            self._drop_connection("http", self.endpoint)
            self.scheme = "https"
            resp = self._ping_once()
            data = resp.read()
        if resp.status == 401:
            challenges = parse_challenges(resp.header("WWW-Authenticate") or "")
            preferred = [c for c in challenges if c.scheme == "bearer"] + [c for c in challenges if c.scheme == "basic"]
            if not preferred:
                raise AuthenticationError(f"unauthorized: {self.endpoint} asks for an unsupported authentication")
            self._challenge = preferred[0]
        elif resp.status >= 400:
            self._raise_for(resp, data, f"registry {self.endpoint}")
        self._pinged = True
        return self._challenge

    def _plain_headers(self) -> dict[str, str]:
        return {"User-Agent": USER_AGENT}

    def _fetch_token(self, challenge: Challenge, scopes: list[str]) -> str:
        realm = challenge.realm
        if not realm:
            raise AuthenticationError(f"unauthorized: {self.endpoint} sent a Bearer challenge without a realm")
        query: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            query.append(("service", challenge.params["service"]))
        query += [("scope", s) for s in scopes]
        if self.credentials is not None:
            query.append(("account", self.credentials.username))
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = self._plain_headers()
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.basic_header()
        resp = self._send("GET", url, headers, None, idempotent=True)
        data = resp.read(MAX_TOKEN_ANSWER if resp.status == 200 else MAX_ERROR_BODY)
        if resp.status == 401:
            raise AuthenticationError(self._unauthorized_message())
        if resp.status >= 400:
            self._raise_for(resp, data, f"token server {realm}")
        try:
            answer = json.loads(data)
            token = answer.get("token") or answer.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthenticationError(f"token server {realm} answered without a token")
        return token

    def _auth_header(self, scopes: list[str]) -> str | None:
        challenge = self.ping()
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise AuthenticationError(self._unauthorized_message())
            return self.credentials.basic_header()
        key = " ".join(sorted(scopes))
        if key not in self._tokens:
            self._tokens[key] = self._fetch_token(challenge, sorted(scopes))
        return f"Bearer {self._tokens[key]}"

    def _unauthorized_message(self) -> str:
        if self.credentials is None:
            return (
                f"unauthorized: authentication required for {self.endpoint}"
                f" (log in with: refrt login {self.endpoint})"
            )
        return f"unauthorized: incorrect username or password for {self.endpoint}"

    def login(self) -> None:
        """Check the credentials: ``GET /v2/`` with them must answer 200."""
        challenge = self.ping()
        if challenge is None:
            return
        resp = self.request("GET", "/v2/", scopes=[])
        data = resp.read()
        if resp.status != 200:
            self._raise_for(resp, data, f"registry {self.endpoint}")

    # -- requests ---------------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scopes: Iterable[str],
        headers: dict[str, str] | None = None,
        body: Body = None,
        follow_redirects: bool = False,
        idempotent: bool | None = None,
    ) -> Response:
        """One request with authentication; a 401 naming a new Bearer scope is retried once with a new token.

        ``idempotent`` (default: GET and HEAD) lets the transport try again after a 5xx or a dropped connection.
        The caller reads (or drains) the body of the answer before the next request.
        """
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        self.ping()  # settles the scheme before the URL is made
        url = path_or_url if "://" in path_or_url else f"{self.base_url}{path_or_url}"
        scope_list = list(scopes)
        for attempt in range(2):
            hdrs = self._plain_headers()
            hdrs.update(headers or {})
            auth = self._auth_header(scope_list)
            if auth is not None:
                hdrs["Authorization"] = auth
            resp = self._send(method, url, hdrs, body, idempotent=idempotent)
            if resp.status == 401 and attempt == 0 and self._refresh_scope(resp, scope_list):
                resp.drain()
                _rewind(body)
                continue
            if follow_redirects and resp.status in (301, 302, 303, 307, 308):
                return self._follow(method, resp, hdrs, idempotent)
            return resp
        raise AssertionError("unreachable")

    def _refresh_scope(self, resp: Response, scopes: list[str]) -> bool:
        """A Bearer 401 that names a scope we did not ask for: add it and fetch a new token."""
        for challenge in parse_challenges(resp.header("WWW-Authenticate") or ""):
            if challenge.scheme == "bearer" and challenge.params.get("scope"):
                new = [s for s in challenge.params["scope"].split(" ") if s not in scopes]
                self._challenge = Challenge("bearer", {**challenge.params})
                self._tokens.pop(" ".join(sorted(scopes)), None)
                scopes.extend(new)
                return True
        return False

    def _follow(self, method: str, resp: Response, headers: dict[str, str], idempotent: bool) -> Response:
        """Follow redirects; Authorization goes only to the registry's own origin."""
        origin = urllib.parse.urlsplit(self.base_url)
        for _ in range(MAX_REDIRECTS):
            location = resp.header("Location")
            resp.drain()
            if not location:
                raise ServerError(f"registry {self.endpoint} redirected without a Location")
            url = urllib.parse.urljoin(resp.url, location)
            target = urllib.parse.urlsplit(url)
            hdrs = dict(headers)
            if (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
                hdrs.pop("Authorization", None)
            if target.scheme == "http" and origin.scheme == "https":
                raise RegistryError(f"registry {self.endpoint} redirected to insecure {target.netloc}")
            resp = self._send(method, url, hdrs, None, idempotent=idempotent)
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
        raise ServerError(f"registry {self.endpoint}: too many redirects")

    def _raise_for(self, resp: Response, data: bytes, what: str) -> None:
        """The one-line error for an unexpected answer: what was asked, the status, the request, the message."""
        code, message = _error_detail(data)
        detail = code or message or resp.reason.lower()
        if resp.status == 401:
            raise AuthenticationError(self._unauthorized_message())
        if resp.status == 403:
            raise DeniedError(f"denied: {message or 'requested access to the resource is denied'} ({what})")
        if resp.status == 404:
            raise ManifestNotFoundError(f"{what} not found: {detail}")
        line = f"{what}: registry answered {resp.describe()}" + (f": {message}" if message else "")
        if resp.status >= 500:
            raise ServerError(line)
        raise RegistryError(line)

    def check(self, resp: Response, expected: Iterable[int], what: str) -> None:
        """Raise the mapped error unless the status is one of ``expected`` (reading at most a few KiB of it)."""
        if resp.status in set(expected):
            return
        self._raise_for(resp, resp.read(), what)

    # -- the distribution API ---------------------------------------------------------------------------------
    def get_manifest(
        self, repo: str, reference: str, accept: list[str], what: str, max_size: int = MAX_MANIFEST_SIZE
    ) -> tuple[bytes, str, str | None]:
        """(bytes, media type, Docker-Content-Digest) of a manifest; one larger than ``max_size`` is refused."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scopes=[f"repository:{repo}:pull"],
            headers={"Accept": ", ".join(accept)},
        )
        self.check(resp, [200], what)
        length = resp.header("Content-Length")
        if length and length.isdigit() and int(length) > max_size:
            self.close()
            raise RegistryError(f"{what}: manifest of {length} bytes is larger than the {max_size} allowed")
        data = self._read_all(resp, what, max_size)
        media_type = (resp.header("Content-Type") or "").split(";")[0].strip()
        return data, media_type, resp.header("Docker-Content-Digest")

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str, what: str) -> str | None:
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scopes=[f"repository:{repo}:pull,push"],
            headers={"Content-Type": media_type},
            body=data,
            idempotent=True,
        )
        self.check(resp, [201, 200], what)
        resp.drain()
        return resp.header("Docker-Content-Digest")

    def blob_size(self, repo: str, digest: str, scopes: list[str]) -> int | None:
        """HEAD a blob: its size when the repository has it, None otherwise."""
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=scopes, follow_redirects=True)
        resp.drain()
        if resp.status == 404:
            return None
        self.check(resp, [200], f"blob {digest} in {self.endpoint}/{repo}")
        length = resp.header("Content-Length")
        return int(length) if length and length.isdigit() else -1

    def open_blob(self, repo: str, digest: str, offset: int = 0) -> Response:
        """GET a blob, redirects followed; the caller streams ``stream`` and must read it to the end.

        With ``offset``, asks for the rest from there (``Range``): the answer is 206 when the registry resumed,
        or 200 with the whole blob when it does not do ranges - the caller looks at the status.
        """
        resp = self.request(
            "GET",
            f"/v2/{repo}/blobs/{digest}",
            scopes=[f"repository:{repo}:pull"],
            headers={"Range": f"bytes={offset}-"} if offset else None,
            follow_redirects=True,
        )
        self.check(resp, [200, 206] if offset else [200], f"blob {digest} of {self.endpoint}/{repo}")
        return resp

    def start_upload(self, repo: str, scopes: list[str], mount: tuple[str, str] | None = None) -> str | None:
        """POST an upload; with ``mount=(digest, from_repo)`` try a cross-repository mount first.

        Returns None when the blob was mounted (201), else the upload URL to send the data to.
        """
        path = f"/v2/{repo}/blobs/uploads/"
        if mount is not None:
            path += "?" + urllib.parse.urlencode({"mount": mount[0], "from": mount[1]})
        resp = self.request("POST", path, scopes=scopes, headers={"Content-Length": "0"}, body=b"")
        self.check(resp, [201, 202], f"upload to {self.endpoint}/{repo}")
        resp.drain()
        if resp.status == 201 and mount is not None:
            return None
        return self._location(resp)

    def _location(self, resp: Response) -> str:
        location = resp.header("Location")
        if not location:
            raise ServerError(f"registry {self.endpoint} answered an upload without a Location")
        return urllib.parse.urljoin(resp.url, location)

    @staticmethod
    def _with_query(url: str, **params: str) -> str:
        parts = urllib.parse.urlsplit(url)
        query = parts.query + ("&" if parts.query else "") + urllib.parse.urlencode(params)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def upload_monolithic(self, location: str, repo: str, digest: str, stream: BinaryIO, size: int) -> None:
        """One PUT with the whole blob and its digest."""
        resp = self.request(
            "PUT",
            self._with_query(location, digest=digest),
            scopes=[f"repository:{repo}:pull,push"],
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=stream,
        )
        self.check(resp, [201], f"blob {digest} upload to {self.endpoint}/{repo}")
        resp.drain()

    def upload_chunked(
        self, location: str, repo: str, digest: str, stream: BinaryIO, size: int, chunk_size: int
    ) -> None:
        """PATCH the blob in chunks with ``Content-Range``, then PUT the digest to close the upload."""
        scopes = [f"repository:{repo}:pull,push"]
        offset = 0
        while offset < size:
            chunk = stream.read(min(chunk_size, size - offset))
            if not chunk:
                raise RegistryError(f"blob {digest} ended after {offset} of {size} bytes while uploading")
            resp = self.request(
                "PATCH",
                location,
                scopes=scopes,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(chunk)),
                    "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                },
                body=chunk,
            )
            self.check(resp, [202], f"blob {digest} chunk upload to {self.endpoint}/{repo}")
            resp.drain()
            location = self._location(resp)
            offset += len(chunk)
        resp = self.request(
            "PUT",
            self._with_query(location, digest=digest),
            scopes=scopes,
            headers={"Content-Length": "0"},
            body=b"",
        )
        self.check(resp, [201], f"blob {digest} upload to {self.endpoint}/{repo}")
        resp.drain()

    def _read_all(self, resp: Response, what: str, max_size: int) -> bytes:
        try:
            data = resp.stream.read(max_size + 1)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise self._transport_error(resp.method, resp.url, exc) from None
        if len(data) > max_size:
            self.close()
            raise RegistryError(f"{what}: manifest larger than the {max_size} bytes allowed")
        length = resp.header("Content-Length")
        if length and length.isdigit() and len(data) != int(length):
            self.close()
            raise ConnectionFailedError(f"{what}: connection dropped after {len(data)} of {length} bytes")
        return data
