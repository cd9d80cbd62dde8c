"""Unpacking crafted layers: every tar entry kind, overlay's whiteout format, hostile layers.

As root the extractor runs directly; as an ordinary user it runs in a user namespace (mknod
of a 0:0 whiteout and chown need one), the way rl itself runs it.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from rootless.errors import ImageError, RlError
from rootless.image.unpack import CHUNK, clean_name, unpack_layer
from tests.conftest import need
from tests.layer_fixtures import (
    LayerBuilder,
    gzip_bytes,
    make_sentinel,
    malicious_layers,
    sha256_digest,
    snapshot,
    tar_mismatches,
    zstd_bytes,
)
from tests.registry_fixtures import load_image_builder

ROOT = os.getuid() == 0


def unpack(data: bytes, dest: Path, compression: str = "none", diff_id: str | None = None):
    """unpack_layer as root, directly or inside a user namespace; returns the notices."""
    dest.mkdir(parents=True, exist_ok=True)
    if ROOT:
        return unpack_layer(io.BytesIO(data), compression, dest, diff_id).notices
    from rootless.primitives.userns import run_in_userns

    out = dest.parent / (dest.name + ".result")

    def child() -> None:
        res = unpack_layer(io.BytesIO(data), compression, dest, diff_id)
        out.write_text(json.dumps(res.notices))

    try:
        run_in_userns(child, name="rl:[test-unpack]")
    except RlError as exc:
        raise ImageError(exc.message) from None
    return json.loads(out.read_text())


def mode(p: Path) -> int:
    return os.lstat(p).st_mode


# -- names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, parts", [
    (b"a/b", [b"a", b"b"]),
    (b"./a//b/", [b"a", b"b"]),
    (b"/etc/passwd", [b"etc", b"passwd"]),
    (b"a/../b", [b"b"]),
    (b".", []),
])
def test_clean_name(name, parts):
    assert clean_name(name) == parts


@pytest.mark.parametrize("name", [b"..", b"../x", b"a/../../x", b"/../x", b"a" * 5000])
def test_clean_name_refuses(name):
    with pytest.raises(ImageError):
        clean_name(name)


# -- entry kinds ---------------------------------------------------------------------------
def test_entry_kinds(tmp_path):
    big = os.urandom(3 * CHUNK + 17)
    layer = (LayerBuilder()
             .dir("etc", 0o755)
             .file("etc/hostname", b"box\n", 0o644)
             .file("bin/su", b"\x7fELF", 0o4755)
             .file("bin/wall", b"\x7fELF", 0o2755)
             .dir("tmp", 0o1777)
             .symlink("bin/sh", "busybox")
             .symlink("abs", "/etc/hostname")
             .hardlink("etc/hn2", "etc/hostname")
             .file("big", big)
             .file(b"odd-\xff\xfe-name \n", b"odd")
             .file("x", b"x", xattrs={"user.comment": b"hello\xff"})
             .build())
    dest = tmp_path / "layer"
    notices = unpack(layer, dest)
    assert notices == []
    assert (dest / "etc/hostname").read_bytes() == b"box\n"
    assert stat.S_IMODE(mode(dest / "bin/su")) == 0o4755
    assert stat.S_IMODE(mode(dest / "bin/wall")) == 0o2755
    assert stat.S_IMODE(mode(dest / "tmp")) == 0o1777
    assert os.readlink(dest / "bin/sh") == "busybox"
    assert os.readlink(dest / "abs") == "/etc/hostname"
    assert os.lstat(dest / "etc/hn2").st_ino == os.lstat(dest / "etc/hostname").st_ino
    assert (dest / "big").read_bytes() == big
    assert (dest / os.fsdecode(b"odd-\xff\xfe-name \n")).read_bytes() == b"odd"
    assert os.getxattr(dest / "x", "user.comment") == b"hello\xff"
    assert int(os.lstat(dest / "etc/hostname").st_mtime) == 1_700_000_000
    assert int(os.lstat(dest / "etc").st_mtime) == 1_700_000_000
    # an implicit parent (bin/ had no entry) is 0755
    assert stat.S_IMODE(mode(dest / "bin")) == 0o755


def test_owners_land_on_mapped_ids(tmp_path):
    dest = tmp_path / "layer"
    unpack(LayerBuilder().file("f", b"", uid=33, gid=33).build(), dest)
    st = os.lstat(dest / "f")
    if ROOT:
        assert (st.st_uid, st.st_gid) == (33, 33)
    else:
        from rootless.primitives.userns import default_mapping

        mapping, _ = default_mapping()
        if mapping.mode == "single":
            pytest.skip("single-id mapping: owner 33 cannot be represented")
        assert st.st_uid == mapping.container_uid_to_host(33)


def in_layer_namespace(fn, out: Path):
    """fn() -> JSON-able, run where the layer's own ids show (root, or the user namespace)."""
    if ROOT:
        return fn()

    from rootless.primitives.userns import run_in_userns

    def child() -> None:
        out.write_text(json.dumps(fn()))

    run_in_userns(child, name="rl:[test-check]")
    return json.loads(out.read_text())


def test_thousands_of_directories_keep_mode_owner_and_mtime(tmp_path):
    """Issue 12 item 1: past ~1000 directories the fix-up pass ran out of descriptors and
    silently left the rest (the shallowest: /usr, /bin...) at mode 0700. The soft limit is
    set to 1024, the default on most distributions, so that the test does not depend on the
    limit of the shell that started it."""
    import resource

    from rootless.primitives.userns import default_mapping

    need(ROOT or default_mapping()[0].mode != "single",
         "owners 33 and 1000 need a subordinate id range (/etc/subuid)")
    builder = load_image_builder()
    tar = builder.add_many_dirs(LayerBuilder(), 3000).build()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        unpack(gzip_bytes(tar), tmp_path / "layer", "gzip", sha256_digest(tar))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    dest = tmp_path / "layer"
    assert in_layer_namespace(lambda: tar_mismatches(tar, dest), tmp_path / "check.json") == []


def test_read_only_directory_is_filled_then_closed(tmp_path):
    dest = tmp_path / "layer"
    unpack(LayerBuilder().dir("ro", 0o555).file("ro/f", b"data").dir("ro/sub", 0o500)
           .file("ro/sub/g", b"g").build(), dest)
    assert (dest / "ro/f").read_bytes() == b"data" or ROOT is False
    assert stat.S_IMODE(mode(dest / "ro")) == 0o555
    assert stat.S_IMODE(mode(dest / "ro/sub")) == 0o500


def test_replacements_last_wins(tmp_path):
    dest = tmp_path / "layer"
    unpack(LayerBuilder()
           .file("a", b"file")
           .dir("a").file("a/inner", b"i")        # file replaced by a directory
           .dir("b").file("b/inner", b"i")
           .file("b", b"now a file")              # directory replaced by a file
           .file("c", b"one").file("c", b"two")   # duplicate: last wins
           .symlink("d", "x").file("d", b"real")  # symlink replaced by a file
           .dir("e").dir("e/sub", 0o700).symlink("e", "x")  # a tree replaced by a symlink
           .dir("w").dir("w/sub", 0o700).whiteout("w")      # a tree whited out
           .build(), dest)
    assert (dest / "a/inner").read_bytes() == b"i"
    assert (dest / "b").read_bytes() == b"now a file"
    assert (dest / "c").read_bytes() == b"two"
    assert not (dest / "d").is_symlink() and (dest / "d").read_bytes() == b"real"
    assert os.readlink(dest / "e") == "x"
    assert stat.S_ISCHR(os.lstat(dest / "w").st_mode)


def test_an_attribute_that_cannot_be_set_is_an_error(tmp_path):
    """A user.* xattr larger than the VFS allows (64 KiB, E2BIG) is not dropped silently."""
    layer = LayerBuilder().file("f", b"x", xattrs={"user.big": b"v" * 70_000}).build()
    with pytest.raises(ImageError, match="'f': setting its extended attribute user.big.*E2BIG"):
        unpack(layer, tmp_path / "layer")


def test_whiteouts_become_overlay_format(tmp_path):
    dest = tmp_path / "layer"
    unpack(LayerBuilder().dir("etc").whiteout("etc/motd").dir("var/cache").opaque("var/cache")
           .file("var/cache/new", b"n").whiteout("gone-dir").build(), dest)
    st = os.lstat(dest / "etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert stat.S_ISCHR(os.lstat(dest / "gone-dir").st_mode)
    assert not os.path.lexists(dest / "etc/.wh.motd")
    assert os.getxattr(dest / "var/cache", "user.overlay.opaque") == b"y"
    assert not os.path.lexists(dest / "var/cache/.wh..wh..opq")
    assert (dest / "var/cache/new").read_bytes() == b"n"


def test_devices_and_fifos_skipped_with_one_notice(tmp_path):
    dest = tmp_path / "layer"
    notices = unpack(LayerBuilder().device("dev/null").device("dev/zero", minor=5)
                     .fifo("run/fifo").file("ok", b"ok").build(), dest)
    assert not os.path.lexists(dest / "dev/null")
    assert not os.path.lexists(dest / "run/fifo")
    assert (dest / "ok").read_bytes() == b"ok"
    assert any("2 character devices" in n for n in notices)
    assert any("1 FIFO" in n for n in notices)


def test_sparse_file_keeps_holes(tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"middle")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(path, "sparse")
    dest = tmp_path / "layer"
    unpack(buf.getvalue(), dest)
    out = dest / "sparse"
    assert out.stat().st_size == 64 << 20
    with open(out, "rb") as f:
        f.seek(32 << 20)
        assert f.read(6) == b"middle"


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_compressions_and_diff_id(tmp_path, compression):
    tar = LayerBuilder().file("a", os.urandom(200_000)).file("b", b"b").build()
    blob = {"gzip": gzip_bytes, "zstd": zstd_bytes, "none": bytes}[compression](tar)
    dest = tmp_path / "layer"
    if ROOT:
        res = unpack_layer(io.BytesIO(blob), compression, dest_mk(dest), sha256_digest(tar))
        assert res.diff_id == sha256_digest(tar) and res.size == len(tar)
    else:
        unpack(blob, dest, compression, sha256_digest(tar))
    assert (dest / "b").read_bytes() == b"b"


def dest_mk(dest: Path) -> Path:
    dest.mkdir()
    return dest


def test_concatenated_gzip_members(tmp_path):
    tar = LayerBuilder().file("a", b"a" * 100_000).build()
    blob = gzip_bytes(tar[:5000]) + gzip_bytes(tar[5000:])
    dest = tmp_path / "layer"
    unpack(blob, dest, "gzip", sha256_digest(tar))
    assert (dest / "a").read_bytes() == b"a" * 100_000


def test_diff_id_mismatch_refused(tmp_path):
    tar = LayerBuilder().file("a", b"a").build()
    with pytest.raises(ImageError, match="diff_id"):
        unpack(tar, tmp_path / "layer", "none", "sha256:" + "0" * 64)


def test_truncated_gzip_refused(tmp_path):
    blob = gzip_bytes(LayerBuilder().file("a", os.urandom(100_000)).build())
    with pytest.raises(ImageError):
        unpack(blob[: len(blob) // 2], tmp_path / "layer", "gzip")


def test_garbage_refused(tmp_path):
    with pytest.raises(ImageError):
        unpack(b"this is not a tar stream" * 100, tmp_path / "layer", "none")


# -- hostile layers ------------------------------------------------------------------------
@pytest.mark.parametrize("layer", malicious_layers(Path("/SENTINEL")), ids=lambda m: m.name)
def test_malicious_layer(tmp_path, layer):
    sentinel = make_sentinel(tmp_path)
    # rebuild the layer aimed at this test's real sentinel
    real = {m.name: m for m in malicious_layers(sentinel)}[layer.name]
    before = snapshot(tmp_path)
    dest = tmp_path / "store" / "layers" / "abc"
    if real.refused:
        with pytest.raises(ImageError):
            unpack(real.data, dest)
    else:
        unpack(real.data, dest)
        if real.check:
            real.check(dest)
    after = {k: v for k, v in snapshot(tmp_path).items()
             if not k.startswith("store") and k != "."}
    assert after == {k: v for k, v in before.items() if k != "."}
    assert (sentinel / "file").read_bytes() == b"original"
    assert Path("/etc/passwd").stat().st_nlink == 1


# -- the layer stream and the growing blob -------------------------------------------------
def test_gzip_with_isal_and_with_zlib_give_the_same_bytes():
    """ISA-L (when installed) and the standard library's zlib both decode every layer: the
    fallback is not dead code."""
    import zlib

    from rootless.image.layerstream import Inflater, _zlib_module

    tar = LayerBuilder().file("a", os.urandom(300_000)).file("b", b"b" * 500_000).build()
    blob = gzip_bytes(tar[:7000]) + gzip_bytes(tar[7000:])  # two members
    for zmod in {_zlib_module(), zlib}:
        reader = Inflater(io.BytesIO(blob), zmod)
        out = b"".join(iter(lambda r=reader: r.read(65536), b""))
        assert out == tar, zmod
        with pytest.raises(ImageError, match="truncated"):
            r = Inflater(io.BytesIO(blob[:-100]), zmod)
            while r.read(65536):
                pass


def test_layer_stream_reads_exactly_and_only_forward():
    from rootless.image.layerstream import LayerStream

    data = os.urandom(3 * CHUNK + 123)
    stream = LayerStream(io.BytesIO(gzip_bytes(data)), "gzip")
    try:
        assert stream.read(10) == data[:10]
        assert stream.read(CHUNK + 5) == data[10:CHUNK + 15]  # across the producer's pieces
        stream.seek(2 * CHUNK)
        assert stream.tell() == 2 * CHUNK and stream.read(7) == data[2 * CHUNK:2 * CHUNK + 7]
        with pytest.raises(ImageError, match="backwards"):
            stream.seek(0)
        stream.drain()
        assert stream.diff_id == sha256_digest(data) and stream.size == len(data)
    finally:
        stream.close()


def test_layer_stream_verifies_the_blob_digest():
    from rootless.image.layerstream import LayerStream

    blob = gzip_bytes(b"x" * 100_000)
    for digest, size, match in ((sha256_digest(b"other"), len(blob), "does not match"),
                                (sha256_digest(blob), len(blob) + 1, "expected")):
        stream = LayerStream(io.BytesIO(blob), "gzip", blob_digest=digest, blob_size=size)
        with pytest.raises(ImageError, match=match):
            stream.drain()
        stream.close()


def test_growing_blob_follows_the_file_until_done(tmp_path):
    """The extractor's end of a feed reads a file while another thread still writes it."""
    import threading
    import time

    from rootless.image.blobfeed import GrowingBlob, feed_pair

    data = os.urandom(2_000_000)
    path = tmp_path / "blob"
    feed, end = feed_pair()

    def writer() -> None:
        with open(path, "wb", buffering=0) as f:
            feed.file(path)
            for i in range(0, len(data), 300_000):
                f.write(data[i:i + 300_000])
                time.sleep(0.01)
        feed.done(len(data))

    thread = threading.Thread(target=writer)
    thread.start()
    reader = GrowingBlob(end, "blob test")
    got = b"".join(iter(lambda: reader.read(100_000), b""))
    thread.join()
    reader.close()
    assert got == data


def test_growing_blob_stops_when_the_download_fails(tmp_path):
    from rootless.image.blobfeed import DownloadFailed, GrowingBlob, feed_pair

    path = tmp_path / "blob"
    path.write_bytes(b"partial")
    feed, end = feed_pair()
    feed.file(path)
    feed.fail()
    reader = GrowingBlob(end, "blob test")
    assert reader.read(100) == b"partial"
    with pytest.raises(DownloadFailed):
        reader.read(100)
    reader.close()
