"""The store without a registry: blobs, locks, layers, names, rmi and prune rules."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

import pytest

from rootless.errors import ImageError
from rootless.image.config import image_run_config, merge_env, resolve_command
from rootless.image.store import Store, link_id
from rootless.paths import Paths
from tests.layer_fixtures import LayerBuilder, gzip_bytes, sha256_digest


def direct(fn, _name):
    fn()


@pytest.fixture
def store(tmp_path):
    s = Store(Paths(tmp_path / "data", tmp_path / "run", tmp_path / "cfg"), as_root=direct)
    s.ensure_dirs()
    return s


def add_layer(store: Store, tar: bytes) -> tuple[str, str]:
    blob = gzip_bytes(tar)
    digest = sha256_digest(blob)
    store.write_blob_bytes(blob, digest)
    diff_id = sha256_digest(tar)
    store.extract_layer(diff_id, "gzip", digest, chown=os.getuid() == 0)
    return diff_id, digest


def add_image(store: Store, name: str | None, files: dict[str, bytes]) -> object:
    b = LayerBuilder()
    for path, data in files.items():
        b.file(path, data)
    diff_id, digest = add_layer(store, b.build())
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
              "rootfs": {"type": "layers", "diff_ids": [diff_id]},
              "config": {"Cmd": ["sh"]}}
    raw = json.dumps(config).encode()
    config_digest = sha256_digest(raw)
    store.write_blob_bytes(raw, config_digest)
    manifest = json.dumps({"config": config_digest, "layers": [digest]}).encode()
    manifest_digest = sha256_digest(manifest)
    store.write_blob_bytes(manifest, manifest_digest)
    return store.add_image(
        manifest_digest=manifest_digest, config_digest=config_digest, config=config,
        names=[name] if name else [],
        layers=[{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest,
                 "size": 1}],
    )


def test_write_blob_verifies(store):
    data = b"hello"
    path = store.write_blob(sha256_digest(data), 5, [b"he", b"llo"])
    assert path.read_bytes() == data
    with pytest.raises(ImageError, match="does not match"):
        store.write_blob(sha256_digest(b"other"), 5, [b"hello"])
    with pytest.raises(ImageError, match="bytes"):
        store.write_blob(sha256_digest(b"abc"), 4, [b"abc"])
    assert list(store.paths.tmp.iterdir()) == []
    with pytest.raises(ImageError):
        store.blob_path("md5:abc")


def test_failing_stream_leaves_nothing(store):
    def chunks():
        yield b"partial"
        raise ImageError("connection reset")

    with pytest.raises(ImageError, match="reset"):
        store.write_blob(sha256_digest(b"partial data"), 12, chunks())
    assert list(store.paths.tmp.iterdir()) == []
    assert list(store.paths.blobs.iterdir()) == []


def test_concurrent_writers_fetch_once(store):
    data = os.urandom(1000)
    digest = sha256_digest(data)
    opened = []

    @contextlib.contextmanager
    def opener():
        opened.append(1)
        time.sleep(0.2)
        yield [data]

    threads = [threading.Thread(target=store.ensure_blob, args=(digest, 1000, opener))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 1
    assert store.blob_path(digest).read_bytes() == data


def test_stale_tmp_cleaned(store):
    hexd = "a" * 64
    leftover = store.paths.tmp / f"blob-{hexd}-1234"
    leftover.write_bytes(b"x")
    busy = store.paths.tmp / f"blob-{'b' * 64}-1234"
    busy.write_bytes(b"x")
    other = store.paths.tmp / "junk"
    other.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(other, (old, old))
    with store.blob_lock("sha256:" + "b" * 64):
        # locks are per open file: another process holds it; simulate with a child
        pid = os.fork()
        if pid == 0:
            store.clean_tmp()
            os._exit(0)
        os.waitpid(pid, 0)
    assert not leftover.exists() and not other.exists()
    assert busy.exists()


def test_layer_dir_and_link(store):
    diff_id, _ = add_layer(store, LayerBuilder().file("a", b"1").build())
    assert store.has_layer(diff_id)
    link = store.layer_link(diff_id)
    assert link == f"l/{link_id(diff_id[7:])}" and len(link) == 18
    assert os.readlink(store.paths.layers / link) == f"../{diff_id[7:]}"
    assert store.layer_size(diff_id) > 0
    # a second extraction of the same layer is a no-op
    assert store.extract_layer(diff_id, "gzip", sha256_digest(gzip_bytes(b""))) is False


def test_layer_records_and_links_are_checked_not_ignored(store):
    """Issue 13 item 11: what the store used to drop as 'some OSError' is now either the one
    errno it expects or an error naming the file."""
    diff_id, _ = add_layer(store, LayerBuilder().file("a", b"1").build())
    hexd = diff_id[7:]
    record = store.paths.layers / f"{hexd}.json"
    record.write_text("{not json")
    with pytest.raises(ImageError, match=f"reading layer record {record}"):
        store.layer_size(diff_id)
    record.unlink()
    assert store.layer_size(diff_id) == 0  # no record: a layer being removed
    # a short link that is not a symlink (EINVAL from readlink) is replaced by the right one
    link = store.paths.layers / store.layer_link(diff_id)
    link.unlink()
    link.write_text("not a link")
    store._ensure_link(hexd)
    assert os.readlink(link) == f"../{hexd}"


def test_failed_extraction_leaves_no_layer(store):
    tar = LayerBuilder().file("../escape", b"x").build()
    blob = gzip_bytes(tar)
    store.write_blob_bytes(blob)
    with pytest.raises(ImageError):
        store.extract_layer(sha256_digest(tar), "gzip", sha256_digest(blob))
    assert [p.name for p in store.paths.layers.iterdir()] == ["l"]


def test_names_and_lookup(store):
    img = add_image(store, "docker.io/library/alpine:latest", {"a": b"1"})
    assert store.get_image("alpine").id == img.id
    assert store.get_image("alpine:latest").id == img.id
    assert store.get_image("docker.io/library/alpine").id == img.id
    assert store.get_image(img.id).id == img.id
    assert store.get_image(img.id[7:12]).id == img.id
    assert store.get_image(img.manifest_digest).id == img.id
    assert store.get_image("alpine@" + img.manifest_digest).id == img.id
    assert store.get_image("busybox") is None
    loc = add_image(store, "localhost/mine:1", {"b": b"2"})
    assert store.get_image("mine:1").id == loc.id
    assert [i.names for i in store.list_images() if i.id == img.id] == [
        ["docker.io/library/alpine:latest"]]


def test_repull_moves_name_and_leaves_dangling(store):
    old = add_image(store, "docker.io/library/app:1", {"a": b"old"})
    new = add_image(store, "docker.io/library/app:1", {"a": b"new"})
    assert store.get_image("app:1").id == new.id
    dangling = store.get_image(old.id)
    assert dangling is not None and dangling.names == []
    result = store.prune()
    assert result.images == [old.id]
    assert len(result.layers) == 1 and result.bytes_freed > 0
    assert store.get_image(old.id) is None
    assert store.get_image("app:1") is not None
    assert all(store.has_layer(d) for d in new.diff_ids)


def test_rmi_rules(store):
    img = add_image(store, "docker.io/library/a:1", {"a": b"1"})
    store.tag(img, "docker.io/library/b:1")
    # by name with two names: untag only
    res = store.remove_image("a:1", False, lambda _id: False)
    assert res.untagged == ["docker.io/library/a:1"] and res.deleted == []
    assert store.get_image("b:1").id == img.id
    # in use: refused, then -f untags and keeps the image for the container
    with pytest.raises(ImageError, match="in use") as info:
        store.remove_image("b:1", False, lambda i: i == img.id)
    assert info.value.exit_code == 2
    res = store.remove_image("b:1", True, lambda i: i == img.id)
    assert res.deleted == [] and store.get_image(img.id).names == []
    # not in use: deleted with its layer and blobs
    res = store.remove_image(img.id, False, lambda _id: False)
    assert res.deleted == [img.id]
    assert list(store.paths.blobs.iterdir()) == []
    assert [p.name for p in store.paths.layers.iterdir()] == ["l"]
    assert list((store.paths.layers / "l").iterdir()) == []
    with pytest.raises(ImageError, match="image not known") as info:
        store.remove_image("a:1", False, lambda _id: False)
    assert info.value.exit_code == 1


def test_shared_layers_survive_rmi(store):
    a = add_image(store, "docker.io/library/a:1", {"same": b"1"})
    b = add_image(store, "docker.io/library/b:1", {"same": b"1"})
    assert a.diff_ids == b.diff_ids
    store.remove_image("a:1", False, lambda _id: False)
    assert store.has_layer(b.diff_ids[0])


def test_prune_removes_unrecorded_blobs_and_layers(store):
    add_layer(store, LayerBuilder().file("orphan", b"x").build())
    result = store.prune()
    assert len(result.layers) == 1 and len(result.blobs) == 1


# -- image config → run defaults ------------------------------------------------------------
CFG = {"config": {"Entrypoint": ["/entry"], "Cmd": ["--default"], "Env": ["A=1", "PATH=/bin"],
                  "WorkingDir": "/w", "User": "1000", "ExposedPorts": {"80/tcp": {}},
                  "StopSignal": "SIGQUIT"}, "rootfs": {"diff_ids": []}}


def test_image_run_config():
    cfg = image_run_config(CFG)
    assert (cfg.entrypoint, cfg.cmd, cfg.workdir, cfg.user) == (
        ["/entry"], ["--default"], "/w", "1000")
    assert cfg.exposed_ports == ["80/tcp"] and cfg.stop_signal == "SIGQUIT"
    empty = image_run_config({"rootfs": {}})
    assert (empty.entrypoint, empty.cmd, empty.workdir) == ([], [], "/")


@pytest.mark.parametrize("override, args, expected", [
    (None, [], ["/entry", "--default"]),
    (None, ["x", "y"], ["/entry", "x", "y"]),
    ("/bin/sh", [], ["/bin/sh"]),                       # --entrypoint clears CMD
    ("/bin/sh", ["-c", "id"], ["/bin/sh", "-c", "id"]),
    ('["/bin/sh", "-c"]', ["id"], ["/bin/sh", "-c", "id"]),
    ("", ["ls"], ["ls"]),                               # "" clears the entrypoint
    ("", [], []),
])
def test_resolve_command(override, args, expected):
    assert resolve_command(image_run_config(CFG), override, args) == expected


def test_merge_env():
    assert merge_env(["A=1", "PATH=/bin"], ["A=2", "B=3"]) == ["A=2", "PATH=/bin", "B=3"]
