"""Gzip layers received on one thread and unpacked on another (``runtime.store.inflate``): what comes out is what
went in, byte for byte, whatever the sizes and the gzip framing; wrong, cut or hostile input leaves the store as it
was, and says what went wrong."""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import io
import os
import tarfile
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from runtime.store import Store
from runtime.store.errors import BadLayer, DigestMismatch
from runtime.store.inflate import (
    ALIGN,
    DIRECT_ENV,
    DIRECT_MIN,
    OUT_MAX,
    STAGE,
    InflatingReader,
    Receiver,
    start_direct,
    write_aligned,
)

Listing = Callable[[Path], list[tuple[str, int]]]

# Around every boundary the code cares about: the 4 KiB alignment of direct I/O, the size from which a file is
# written around the page cache, the staging buffer, the receiver's chunks.
SIZES = [0, 1, 4095, 4096, 4097, DIRECT_MIN - 1, DIRECT_MIN, DIRECT_MIN + 1, STAGE * 2 + 4096, STAGE * 3 + 777]


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o640, 1700000000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Trickle(io.RawIOBase):
    """A source that hands out at most ``step`` bytes per read, as a socket does; fails at ``fail_at`` if set."""

    def __init__(
        self, data: bytes, step: int = 70_001, fail_at: int | None = None, error: Exception | None = None
    ) -> None:
        self.data, self.pos, self.step, self.fail_at, self.error = data, 0, step, fail_at, error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise self.error or ConnectionAbortedError("the peer went away")
        n = min(len(buffer), self.step, len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def trickle(data: bytes, **kwargs: Any) -> BinaryIO:
    return cast(BinaryIO, Trickle(data, **kwargs))


@pytest.mark.parametrize("direct", ["1", "0"])
def test_every_size_comes_out_as_it_went_in(store: Store, monkeypatch: pytest.MonkeyPatch, direct: str) -> None:
    monkeypatch.setenv(DIRECT_ENV, direct)
    files = {f"f{size}": os.urandom(size) for size in SIZES}
    plain = _tar(files)
    packed = gzip.compress(plain, 1)
    layer = store.add_layer_from_tar(trickle(packed), compressed=True, digest=_sha(packed), diff_id=_sha(plain))
    assert (layer.digest, layer.diff_id, layer.size) == (_sha(packed), _sha(plain), len(plain))
    assert store.blobs.read(layer.digest) == packed
    for name, data in files.items():
        path = layer.path / name
        assert path.read_bytes() == data, name
        assert (path.stat().st_mode & 0o7777, path.stat().st_mtime) == (0o640, 1700000000)
    assert not list(store.tmp.iterdir())


def test_gzip_members_and_zero_padding_are_one_stream(store: Store) -> None:
    """Concatenated gzip members are one stream (gzip readers, docker's too, read them all); zeros may follow a
    member. The diff_id covers every byte of the tar, whichever member holds it."""
    plain = _tar({"a": os.urandom(300_000), "b": b"x" * 100_000})
    cut = len(plain) // 3
    packed = gzip.compress(plain[:cut]) + b"\0" * 1000 + gzip.compress(plain[cut:]) + b"\0" * 10
    layer = store.add_layer_from_tar(io.BytesIO(packed), compressed=True)
    assert layer.diff_id == _sha(plain) and layer.digest == _sha(packed)
    assert (layer.path / "b").read_bytes() == b"x" * 100_000


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda gz: gz[: len(gz) // 2], id="cut-in-the-deflate-data"),
        pytest.param(lambda gz: gz[:-4], id="cut-in-the-trailer"),
        pytest.param(lambda gz: gz + b"garbage", id="trailing-garbage"),
        pytest.param(lambda gz: gz[:-8] + bytes(8), id="wrong-crc-and-length"),
        pytest.param(lambda gz: b"\0\0" + gz, id="leading-zeros"),
    ],
)
def test_broken_gzip_is_a_bad_layer_and_nothing_is_kept(
    store: Store, store_listing: Listing, mangle: Callable[[bytes], bytes]
) -> None:
    packed = gzip.compress(_tar({"big": os.urandom(2 * DIRECT_MIN)}), 1)
    before = store_listing(store.root)
    with pytest.raises(BadLayer, match=r"corrupt or truncated|not a valid tar"):
        store.add_layer_from_tar(trickle(mangle(packed)), compressed=True)
    assert store_listing(store.root) == before


def test_bytes_that_do_not_unpack_and_are_not_the_named_ones_are_a_digest_mismatch(
    store: Store, store_listing: Listing
) -> None:
    """The registry sent other bytes than the manifest names: the stream is still read to its end, so that the
    error says so, rather than 'not a valid tar'."""
    wrong = os.urandom(3 * 512 * 1024)
    named = _sha(b"the bytes the manifest names")
    before = store_listing(store.root)
    with pytest.raises(DigestMismatch, match=f"blob {named}: digest mismatch: content hashes to {_sha(wrong)}"):
        store.add_layer_from_tar(trickle(wrong), compressed=True, digest=named)
    assert store_listing(store.root) == before


def test_a_layer_with_other_digest_or_diff_id_is_refused_before_it_is_stored(
    store: Store, store_listing: Listing
) -> None:
    plain = _tar({"f": os.urandom(10_000)})
    packed = gzip.compress(plain)
    before = store_listing(store.root)
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        store.add_layer_from_tar(io.BytesIO(packed), compressed=True, digest=_sha(b"other"))
    with pytest.raises(DigestMismatch, match=f"unpacks to {_sha(plain)}, but the config says"):
        store.add_layer_from_tar(io.BytesIO(packed), compressed=True, diff_id=_sha(b"other"))
    assert store_listing(store.root) == before


class Dropped(Exception):
    """What a registry client raises for a connection it could not mend (not an OSError)."""


@pytest.mark.parametrize(
    ("error", "expected", "message"),
    [
        pytest.param(Dropped("connection dropped"), Dropped, "connection dropped", id="transport-error-as-is"),
        pytest.param(OSError(5, "Input/output error"), BadLayer, "Input/output error", id="os-error-as-bad-layer"),
    ],
)
def test_a_failing_source_fails_the_layer(
    store: Store, store_listing: Listing, error: Exception, expected: type[Exception], message: str
) -> None:
    packed = gzip.compress(_tar({"f": os.urandom(3 * DIRECT_MIN)}), 1)
    before = store_listing(store.root)
    with pytest.raises(expected, match=message):
        store.add_layer_from_tar(trickle(packed, fail_at=DIRECT_MIN, error=error), compressed=True)
    assert store_listing(store.root) == before


def test_a_gzip_bomb_inflates_in_bounded_pieces(tmp_path: Path) -> None:
    """64 MiB of zeros packed into 64 KiB: inflated piece by piece, never whole."""
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 31)
    packed = squeezer.compress(bytes(64 << 20)) + squeezer.flush()
    assert len(packed) < 100_000
    sink = tmp_path / "blob"
    sink.touch()
    receiver = Receiver(io.BytesIO(packed), str(sink))
    reader = InflatingReader(receiver.next)
    tracemalloc.start()
    try:
        assert reader.read(1000) == bytes(1000)
        reader.seek(32 << 20)
        assert reader.tell() == 32 << 20
        reader.drain()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    receiver.close(drain=True)
    assert peak < 4 * OUT_MAX
    assert reader.count == 64 << 20 and reader.digest == _sha(bytes(64 << 20))
    assert receiver.digest == _sha(packed) and sink.read_bytes() == packed
    with pytest.raises(OSError, match="cannot seek back"):
        reader.seek(0)


def test_a_device_that_refuses_the_alignment_gets_buffered_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device with a coarser block size than 4 KiB refuses the direct write (EINVAL): the data still lands."""
    real_write = os.write
    refused = []

    def picky_write(fd: int, data: Any) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    target = tmp_path / "f"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert start_direct(fd)
        monkeypatch.setattr(os, "write", picky_write)
        data = os.urandom(3 * ALIGN + 5)
        assert write_aligned(fd, memoryview(data), True) is False
    finally:
        os.close(fd)
    assert refused == [3 * ALIGN] and target.read_bytes() == data
