"""A gzip layer unpacked on two cores: one thread receives, hashes and keeps the compressed bytes while the caller's
thread inflates, hashes and unpacks them.

Why: per byte, adding a gzip layer takes two SHA-256 passes (the blob digest over the compressed bytes, the diff_id
over the tar), an inflate with its CRC-32, and two writes (the blob kept for push and save, the unpacked files).
Done in one thread that is one core's work end to end; split at the compressed/plain boundary the halves are about
even, and run at once on two cores: hashlib, zlib, ``recv`` and ``write`` all release the GIL for buffers this size.

Also cheaper than ``gzip.GzipFile`` under ``tarfile``'s stream mode, which the profile showed costing as much as the
hashing: ``tarfile``'s ``r|`` reader gathers 10 KiB reads into joined strings and slices them again (three copies
of every byte, in freshly allocated buffers), and the gzip reader feeds zlib 8 KiB at a time. Here the receiver
fills a fixed set of preallocated buffers (no fresh pages per chunk: on the VMs this runs on, a page's first touch
is what costs), zlib gets each whole buffer, and a member's data goes from zlib's output to ``os.write`` with no
copy in between (:meth:`InflatingReader.copy_to`, used by the unpacker).

Bounded: a chunk inflates in pieces of at most ``OUT_MAX`` bytes (a gzip bomb comes out in pieces, written as they
come), and at most ``BUFFERS`` chunks wait between the threads.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import queue
import tarfile
import threading
import zlib
from collections.abc import Callable
from typing import IO, Any

#: The receiver's buffers: few and small, since each page of them is a fresh page in a fresh worker process.
CHUNK = 512 << 10
BUFFERS = 4
OUT_MAX = 1 << 20
#: DirectSink's aligned staging buffer.
STAGE = 1 << 20
#: Direct I/O wants the memory, the file offset and the length aligned; 4 KiB covers every common device.
ALIGN = 4096
#: Files from this size up are written around the page cache (:class:`DirectSink`).
DIRECT_MIN = 1 << 20
DIRECT_ENV = "REFRT_DIRECT_IO"
#: zlib's window bits for a gzip wrapper: zlib parses the header and checks the CRC-32 and length trailer itself.
GZIP_WBITS = 16 + zlib.MAX_WBITS

Chunk = bytes | bytearray | memoryview


def write_all(fd: int, data: Chunk) -> None:
    """``os.write`` until all of ``data`` is written (a write to a file may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def direct_io_wanted() -> bool:
    """Bulk data goes around the page cache unless ``REFRT_DIRECT_IO`` is 0/off/no/false."""
    return os.environ.get(DIRECT_ENV, "").strip().lower() not in ("0", "off", "no", "false")


def start_direct(fd: int) -> bool:
    """Switch ``fd`` to O_DIRECT; False where the file system cannot (tmpfs, some FUSE and overlay setups)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError:
        return False
    return True


def end_direct(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)


def write_aligned(fd: int, view: memoryview, direct: bool) -> bool:
    """Write ``view`` (starting at an aligned address, at an aligned file offset when ``direct``): its aligned
    part with O_DIRECT, an unaligned tail after switching it off. Returns whether ``fd`` is still direct."""
    if direct:
        cut = len(view) - len(view) % ALIGN
        try:
            written = os.write(fd, view[:cut]) if cut else 0
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: the device wants a coarser alignment; the page cache it is
                raise
            written = 0
        if written == len(view):
            return True
        end_direct(fd)  # the tail, or the rest of a short write, goes through the page cache
        view = view[written:]
    write_all(fd, view)
    return False


class PlainSink:
    """Member data written as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: memoryview) -> None:
        write_all(self.fd, data)

    def close(self) -> None:
        pass


class DirectSink:
    """Member data of a big file written around the page cache (O_DIRECT), through the aligned ``stage``.

    Why: on the VMs this runs on, a page-cache page costs a fault into the host the first time it is touched after
    the guest gave it back - measured 2-9 ms per MiB written, against under 1 ms per MiB with O_DIRECT; and a freshly
    pulled layer's big files are not read again soon (a container reads the few it needs, from disk).
    """

    def __init__(self, fd: int, stage: mmap.mmap) -> None:
        self.fd, self.stage, self.fill = fd, memoryview(stage), 0
        self.direct = True

    def write(self, data: memoryview) -> None:
        if not self.direct:
            write_all(self.fd, data)
            return
        while data:
            n = min(len(data), len(self.stage) - self.fill)
            self.stage[self.fill : self.fill + n] = data[:n]
            self.fill += n
            data = data[n:]
            if self.fill == len(self.stage):
                self.direct = write_aligned(self.fd, self.stage, True)
                self.fill = 0
                if not self.direct:
                    write_all(self.fd, data)
                    return

    def close(self) -> None:
        if self.fill:
            write_aligned(self.fd, self.stage[: self.fill], self.direct)
            self.fill = 0
        self.stage.release()


class Receiver:
    """Reads ``src`` to its end on a thread of its own: each chunk is hashed (:attr:`digest`), written to ``sink``
    (the path of a new file, which the thread opens and closes itself) and handed to the consumer through :meth:`next`.

    ``head`` is what the caller already read from ``src`` (the magic it looked at)."""

    def __init__(self, src: IO[bytes], sink: str, head: bytes = b"") -> None:
        self.src, self.head = src, head
        self.hasher = hashlib.sha256()
        self.count = 0
        self._sink = os.open(sink, os.O_WRONLY | os.O_CLOEXEC)
        # The blob is read again only by push and save: written around the page cache (see DirectSink). The
        # buffers are mmaps, so page-aligned as O_DIRECT wants, and every chunk but the last is whole.
        self._direct = direct_io_wanted() and start_direct(self._sink)
        self._free: queue.SimpleQueue[mmap.mmap | None] = queue.SimpleQueue()
        for _ in range(BUFFERS):
            self._free.put(mmap.mmap(-1, CHUNK, flags=mmap.MAP_PRIVATE))
        self._full: queue.SimpleQueue[tuple[mmap.mmap, int] | None] = queue.SimpleQueue()
        self._held: mmap.mmap | None = None
        self._error: BaseException | None = None
        self._stopped = False
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="layer-receiver", daemon=True)
        self._thread.start()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()

    def _fill(self, buf: mmap.mmap) -> int:
        """Fill ``buf`` from the source; fewer bytes only at its end."""
        view = memoryview(buf)
        n = 0
        if self.head:
            n = len(self.head)
            view[:n] = self.head
            self.head = b""
        readinto = getattr(self.src, "readinto", None)
        while n < len(buf):
            if readinto is not None:
                got = readinto(view[n:])
            else:
                data = self.src.read(len(buf) - n)
                got = len(data)
                view[n : n + got] = data
            if not got:
                break
            n += got
        return n

    def _run(self) -> None:
        try:
            while not self._stopped:
                buf = self._free.get()
                if buf is None:
                    return
                n = self._fill(buf)
                if n:
                    view = memoryview(buf)[:n]
                    self.hasher.update(view)
                    self._direct = write_aligned(self._sink, view, self._direct)
                    self.count += n
                    self._full.put((buf, n))
                if n < len(buf):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            self._error = exc
        finally:
            os.close(self._sink)
            self._full.put(None)

    def next(self) -> memoryview | None:
        """The next chunk (valid until the next call), or None at the end; the receiver's failure is raised here."""
        if self._held is not None:
            self._free.put(self._held)
            self._held = None
        if self._ended:
            return None
        item = self._full.get()
        if item is None:
            self._ended = True
            self._thread.join()
            if self._error is not None:
                raise self._error
            return None
        self._held, n = item
        return memoryview(self._held)[:n]

    def close(self, *, drain: bool) -> None:
        """End the hand-over. ``drain``: let the receiver read, hash and write the rest of the source (the digest of
        all of it is wanted) and wait for it - a failure of the receiver not yet raised is raised here (without all
        the bytes there is no digest to tell); else stop it at its next chunk, without waiting for a read under way
        (it only touches its own descriptor and buffers)."""
        if not drain:
            self._stopped = True
            self._free.put(None)
            return
        while self.next() is not None:
            pass


class InflatingReader:
    """The tar inside the gzip stream (one or more members) that ``supply`` delivers chunk by chunk (None at the
    end), for ``tarfile`` in its seekable mode: ``read``, ``tell``, forward ``seek``; ``copy_to`` writes member data
    straight to a file. Every inflated byte is hashed (:attr:`digest`, the diff_id) and counted, read or skipped."""

    def __init__(self, supply: Callable[[], Chunk | None]) -> None:
        self._supply = supply
        self._inflater: Any = None
        self._members = 0
        self._pending: Chunk = b""
        self._out: bytes = b""
        self._at = 0
        self._pos = 0
        self.hasher = hashlib.sha256()
        self.count = 0

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()

    def _inflate(self) -> bytes | None:
        """The next piece of inflated data, or None at the end of the compressed stream."""
        while True:
            if not self._pending:
                chunk = self._supply()
                if chunk is None:
                    if self._inflater is not None:
                        raise EOFError("compressed data ended before the end-of-stream marker was reached")
                    return None
                self._pending = chunk
                continue
            if self._inflater is None:
                if self._members:  # after a member, zero padding is allowed (as gzip readers do); else a member
                    rest = bytes(self._pending).lstrip(b"\0")
                    if not rest:
                        self._pending = b""
                        continue
                    self._pending = rest
                self._inflater = zlib.decompressobj(GZIP_WBITS)
            out: bytes = self._inflater.decompress(self._pending, OUT_MAX)
            # Copies of what zlib did not take: the supplier's buffer is free from here on.
            self._pending = self._inflater.unconsumed_tail
            if self._inflater.eof:
                self._pending = self._inflater.unused_data
                self._inflater = None
                self._members += 1
            if out:
                self.hasher.update(out)
                self.count += len(out)
                return out

    def _available(self) -> int:
        """Bytes ready in the current piece, inflating the next one when it is used up (0 at the end)."""
        left = len(self._out) - self._at
        while not left:
            out = self._inflate()
            if out is None:
                return 0
            self._out, self._at = out, 0
            left = len(out)
        return left

    def read(self, size: int = -1) -> bytes:
        parts = []
        while size:
            left = self._available()
            if not left:
                break
            n = left if size < 0 else min(size, left)
            parts.append(self._out[self._at : self._at + n])
            self._at += n
            self._pos += n
            size -= n if size > 0 else 0
        return b"".join(parts)

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        """Forward only (tarfile skips what it does not read); past the end, as a file, reads then find nothing."""
        target = pos if whence == os.SEEK_SET else self._pos + pos
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target < self._pos:
            raise OSError(f"cannot seek back in a layer stream (to {target} from {self._pos})")
        while self._pos < target:
            left = self._available()
            if not left:
                self._pos = target
                break
            n = min(left, target - self._pos)
            self._at += n
            self._pos += n
        return self._pos

    def copy_to(self, sink: PlainSink | DirectSink, size: int) -> None:
        """Write the next ``size`` bytes to ``sink`` (a member's data); cut short is a tar error, as tarfile says."""
        while size:
            left = self._available()
            if not left:
                raise tarfile.ReadError("unexpected end of data")
            n = min(left, size)
            sink.write(memoryview(self._out)[self._at : self._at + n])
            self._at += n
            self._pos += n
            size -= n

    def drain(self) -> None:
        """Inflate (and hash) the rest: the diff_id covers every byte of the tar, end blocks and padding included."""
        self._at = len(self._out)
        while self._inflate() is not None:
            pass
