"""One blob's body as a stream that survives dropped connections: the registry client's ``Range`` resume.

Why a stream: a pull unpacks a layer while it downloads (the tar reader pulls bytes through the hash, the gunzip
and the unpacker), so a dropped connection has to be mended below the reader, invisibly. After a drop or a stall
the rest is asked for with ``Range: bytes=OFFSET-``: a 206 from that offset continues where the bytes stopped; a
registry that ignores ranges answers 200 with the whole blob, and the bytes already delivered are read and skipped.
At most ``policy.retries`` resumes, with the policy's backoff. Never more than the declared size is delivered, and
a body longer than declared is refused (the digest check above decides whether the bytes are right).
"""

from __future__ import annotations

import http.client
import io
import time
from typing import Any

from runtime.registry.client import RegistryClient, Response
from runtime.registry.errors import ConnectionFailedError, DigestMismatchError
from runtime.registry.manifests import Descriptor

CHUNK = 1 << 20


def _content_range_start(resp: Response) -> int | None:
    """The first byte of a 206 answer (``Content-Range: bytes START-END/TOTAL``), None when unreadable."""
    value = (resp.header("Content-Range") or "").strip()
    unit, _, rest = value.partition(" ")
    start = rest.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


class _Short(Exception):
    """A body ended before the bytes to skip were read."""


class BlobStream(io.RawIOBase):
    """``read``/``readinto`` over the blob ``blob`` of ``repo``; opens the first answer at once."""

    def __init__(self, client: RegistryClient, repo: str, blob: Descriptor) -> None:
        super().__init__()
        self.client, self.repo, self.blob = client, repo, blob
        self.offset = 0
        self.resumes = 0
        self.resp = client.open_blob(repo, blob.digest)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.blob.size - self.offset)
        if want <= 0:
            self._finish()
            return 0
        target = memoryview(buffer).cast("B")[:want]
        while True:
            error: BaseException | None = None
            try:
                n = self.resp.stream.readinto(target)  # straight into the reader's buffer: no copy on the way
            except (OSError, http.client.HTTPException) as exc:
                n, error = 0, exc
            if n:
                self.offset += n
                return n
            self._resume(error)

    def _finish(self) -> None:
        """At the declared size: the answer must end here too."""
        stream = self.resp.stream
        if stream.isclosed():
            return
        if stream.length == 0:
            stream.close()  # read1 at the end of a Content-Length body does not mark it done: the connection stays
            return
        try:
            extra = stream.read1(1)
        except (OSError, http.client.HTTPException):
            extra = b""
        self.client.close()
        if extra:
            raise DigestMismatchError(f"blob {self.blob.digest}: more than the {self.blob.size} bytes declared")

    def _resume(self, error: BaseException | None) -> None:
        """Open the rest of the blob from ``offset``; raise once the retries are spent."""
        policy = self.client.policy
        while True:
            self.client.close()
            if self.resumes >= policy.retries:
                reason = "timeout" if isinstance(error, TimeoutError) else "connection dropped"
                detail = f": {error}" if error is not None and str(error) else ""
                raise ConnectionFailedError(
                    f"blob {self.blob.digest}: {reason} after {self.offset} of {self.blob.size} bytes{detail}"
                )
            time.sleep(policy.backoff(self.resumes))
            self.resumes += 1
            try:
                resp = self.client.open_blob(self.repo, self.blob.digest, offset=self.offset)
                if resp.status == 206 and _content_range_start(resp) == self.offset:
                    self.resp = resp
                    return
                if resp.status == 206:  # some other range: start from the whole blob
                    resp.conn.close()
                    resp = self.client.open_blob(self.repo, self.blob.digest)
                self._skip(resp, self.offset)
                self.resp = resp
                return
            except (ConnectionFailedError, _Short, OSError, http.client.HTTPException) as exc:
                error = exc

    @staticmethod
    def _skip(resp: Response, count: int) -> None:
        while count:
            data = resp.stream.read1(min(count, CHUNK))
            if not data:
                raise _Short(f"the answer ended {count} bytes before the resume point")
            count -= len(data)

    def close(self) -> None:
        if not self.closed and not self.resp.stream.isclosed():
            self.resp.conn.close()
        super().close()
