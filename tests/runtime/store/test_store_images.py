"""References, tags, removal rules (in-use refusal), prune and garbage collection."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.errors import NotFoundError
from runtime.store import Image, ImageInUse, ImageNotFound, Layer, Store
from runtime.store.errors import AmbiguousReference, InvalidReference
from runtime.store.reference import familiar_reference, normalize_reference

AddTar = Callable[..., Layer]
TarBytes = Callable[..., bytes]
Listing = Callable[[Path], list[tuple[str, int]]]


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("user/app:v1", "docker.io/user/app:v1"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"),
        ("localhost/app", "localhost/app:latest"),
        ("app@sha256:" + "a" * 64, "docker.io/library/app@sha256:" + "a" * 64),
    ],
)
def test_normalize_reference(given: str, normal: str) -> None:
    assert normalize_reference(given) == normal


def test_familiar_and_invalid_references() -> None:
    assert familiar_reference("docker.io/library/busybox:latest") == "busybox:latest"
    assert familiar_reference("docker.io/user/app") == "user/app"
    assert familiar_reference("localhost:5000/app:v1") == "localhost:5000/app:v1"
    for bad in ("Busybox", "a b", "busybox:", "busybox@sha256:xyz", "", "a//b", "-x"):
        with pytest.raises(InvalidReference):
            normalize_reference(bad)


def test_resolve_by_every_spelling(store: Store, busybox: Image) -> None:
    hexid = busybox.id.split(":")[1]
    for ref in (
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "library/busybox",
        busybox.id,
        hexid,
        hexid[:12],
        hexid[:4],
        "sha256:" + hexid[:10],
    ):
        assert store.resolve(ref).id == busybox.id, ref
    with pytest.raises(ImageNotFound, match="No such image: busybox:nope"):
        store.resolve("busybox:nope")
    with pytest.raises(NotFoundError):
        store.resolve("nothere")
    assert busybox.repo_tags == ["busybox:latest"] and busybox.manifest_digest.startswith("sha256:")
    digest_ref = f"busybox@{busybox.manifest_digest}"
    assert store.resolve(digest_ref).id == busybox.id


def test_repo_digest_recorded_and_resolvable(store: Store, busybox: Image) -> None:
    name = store.add_repo_digest(busybox, "localhost:5000/bb")
    assert name == f"localhost:5000/bb@{busybox.manifest_digest}"
    assert store.resolve(name).repo_digests == [name]
    assert store.resolve(name).id == busybox.id


def test_manifest_round_trips_exact_bytes(store: Store, busybox: Image) -> None:
    raw = store.manifest_bytes(busybox)
    other = store.add_image_from_manifest(
        raw, "application/vnd.oci.image.manifest.v1+json", ["copy:1"], repository="localhost:5000/copy"
    )
    assert other.id == busybox.id and other.manifest_digest == busybox.manifest_digest
    assert "localhost:5000/copy@" + busybox.manifest_digest in other.repo_digests


def test_tag_moves_and_leaves_old_image_dangling(store: Store, busybox: Image, add_tar: AddTar) -> None:
    store.tag(busybox, "mine:v1")
    assert sorted(store.resolve("mine:v1").repo_tags) == ["busybox:latest", "mine:v1"]
    other = store.commit_image({"config": {"Cmd": ["true"]}}, [add_tar([("x", "file", b"x")])], ["mine:v1"])
    assert store.resolve("mine:v1").id == other.id
    assert store.resolve(busybox.id).repo_tags == ["busybox:latest"]
    store.untag("busybox")
    dangling = store.resolve(busybox.id)
    assert dangling.repo_tags == []
    assert busybox.id in [i.id for i in store.images()]


def test_ambiguous_prefix(store: Store, add_tar: AddTar) -> None:
    ids = []
    for i in range(40):
        ids.append(store.commit_image({"config": {"Env": [f"N={i}"]}}, [], [f"img{i}:t"]).id)
    # with 40 ids some pair shares its first hex digit
    first = [i.split(":")[1][0] for i in ids]
    shared = next(c for c in first if first.count(c) > 1)
    with pytest.raises(AmbiguousReference):
        store.resolve(shared)


def _use(store: Store, image_id: str, name: str = "c0ffee") -> None:
    cdir = store.paths.containers / name
    cdir.mkdir(parents=True)
    (cdir / "config.json").write_text(json.dumps({"Image": image_id}))


def test_remove_refuses_an_image_in_use(store: Store, busybox: Image) -> None:
    _use(store, busybox.id)
    with pytest.raises(ImageInUse, match="container c0ffee is using") as info:
        store.remove("busybox")
    assert info.value.exit_code == 1
    with pytest.raises(ImageInUse, match="must be forced"):
        store.remove(busybox.id)
    assert store.resolve("busybox").id == busybox.id
    # forced: untagged, but kept while the container exists (docker's rule)
    assert store.remove("busybox", force=True) == ["Untagged: busybox:latest"]
    assert store.resolve(busybox.id).repo_tags == []
    assert all(layer.path.is_dir() for layer in busybox.layers)


def test_in_use_check_hook(store: Store, busybox: Image, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Store, "in_use_check", lambda image_id: "abcdef123456789" if image_id == busybox.id else None)
    with pytest.raises(ImageInUse, match="abcdef123456"):
        store.remove("busybox")
    monkeypatch.setattr(Store, "in_use_check", lambda image_id: False)
    assert store.remove("busybox")[-1] == f"Deleted: {busybox.id}"


def test_remove_untags_then_deletes_and_collects(store: Store, busybox: Image) -> None:
    store.tag(busybox, "other")
    assert store.remove("other") == ["Untagged: other:latest"]
    with pytest.raises(ImageInUse, match="multiple repositories"):
        store.tag(busybox, "third") and store.remove(busybox.id)
    store.untag("third")
    report = store.remove("busybox")
    assert report == ["Untagged: busybox:latest", f"Deleted: {busybox.id}"]
    with pytest.raises(ImageNotFound):
        store.resolve(busybox.id)
    assert busybox.layers[0].path.is_dir()  # within the grace period: a build might still want it
    store.gc(grace_seconds=0)
    assert not busybox.layers[0].path.exists()
    assert list(store.blobs.digests()) == []
    assert list(store.layerdb.iterdir()) == []


def test_prune_removes_only_unused_dangling(store: Store, busybox: Image, add_tar: AddTar) -> None:
    a = store.commit_image({"config": {"Env": ["A=1"]}}, [add_tar([("a", "file", b"a")])], [])
    b = store.commit_image({"config": {"Env": ["B=1"]}}, [add_tar([("b", "file", b"b")])], [])
    _use(store, b.id)
    report, _ = store.prune()
    assert report == [f"deleted: {a.id}"]
    assert {i.id for i in store.images()} == {busybox.id, b.id}
    report, _ = store.prune(all_images=True)
    assert report == ["untagged: busybox:latest", f"deleted: {busybox.id}"]


def test_concurrent_taggers_lose_nothing(store: Store, busybox: Image) -> None:
    """Eight processes tagging at once: the store lock serialises the index updates, no tag is lost."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from runtime.paths import Paths; from runtime.store import Store;"
        f"s = Store(Paths(Path({str(store.paths.root)!r}), Path({str(store.paths.state)!r})));"
        "[s.tag(s.resolve('busybox'), f'par{sys.argv[1]}:{j}') for j in range(5)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)]) for i in range(8)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 8
    tags = store.resolve("busybox").repo_tags
    assert len(tags) == 1 + 8 * 5 and "par7:4" in tags


def test_gc_keeps_layers_other_images_share(store: Store, add_tar: AddTar) -> None:
    shared = add_tar([("base", "file", b"b")])
    only = add_tar([("only", "file", b"o")])
    keep = store.commit_image({}, [shared], ["keep:1"])
    drop = store.commit_image({}, [shared, only], ["drop:1"])
    store.remove("drop:1")
    store.gc(grace_seconds=0)
    assert shared.path.is_dir() and not only.path.exists()
    assert store.blobs.has(shared.digest) and not store.blobs.has(only.digest)
    assert not store.blobs.has(drop.manifest_digest) and store.blobs.has(keep.manifest_digest)
    assert store.lower_dirs(store.resolve("keep:1")) == [shared.path]


def test_an_image_without_layers_gets_one_empty_lower_dir(store: Store) -> None:
    image = store.commit_image({"config": {"Cmd": ["/app"]}}, [], ["scratch:1"])
    lowers = store.lower_dirs(store.resolve("scratch:1"))
    assert len(lowers) == 1 and lowers[0].is_dir() and list(lowers[0].iterdir()) == []
    assert image.config["rootfs"] == {"type": "layers", "diff_ids": []}


def test_removing_the_last_tag_of_a_pulled_image_drops_its_digest_too(store: Store, busybox: Image) -> None:
    digest_ref = store.add_repo_digest(busybox, "busybox")
    report = store.remove("busybox")
    assert report == ["Untagged: busybox:latest", f"Untagged: {digest_ref}", f"Deleted: {busybox.id}"]
    assert store.images() == []


def test_removing_a_digest_reference_keeps_a_tagged_image(store: Store, busybox: Image) -> None:
    """``rmi repo@digest`` of an image that still has a tag only drops that reference (docker does the same)."""
    digest_ref = store.add_repo_digest(busybox, "localhost:5000/cf/bb")
    assert store.remove(digest_ref) == [f"Untagged: {digest_ref}"]
    kept = store.resolve("busybox")
    assert kept.id == busybox.id
    assert kept.repo_digests == []
    with pytest.raises(ImageNotFound):
        store.resolve(digest_ref)
