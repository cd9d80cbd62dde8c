"""Hostile layers, unpacked for real: through the store, in the user namespace, as rl does.

Every layer of tests/layer_fixtures.malicious_layers() is aimed at a sentinel directory
outside the store. Refused layers must leave no layer directory behind; neutralised ones
unpack; in every case the sentinel and /etc/passwd are exactly as they were.

The namespace path is the product's path: run this suite as an ordinary user
(`runuser -u rltest -- ... pytest tests/security`). As root it still runs, but the
extraction is direct (no namespace), which the unit suite already covers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootless.errors import RlError
from rootless.image.store import Store
from rootless.paths import Paths
from tests.layer_fixtures import (
    LayerBuilder,
    gzip_bytes,
    make_sentinel,
    malicious_layers,
    sha256_digest,
    snapshot,
)

LAYERS = malicious_layers(Path("/SENTINEL"))


def _passwd_state() -> tuple[int, int, float]:
    st = os.stat("/etc/passwd")
    return st.st_nlink, st.st_size, st.st_mtime


@pytest.fixture
def store(tmp_path):
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")
    s = Store(paths)
    s.ensure_dirs()
    return s


def _unpack(store: Store, tar: bytes) -> str:
    blob = gzip_bytes(tar)
    digest = sha256_digest(blob)
    store.write_blob_bytes(blob, digest)
    diff_id = sha256_digest(tar)
    store.as_root(lambda: store.extract_layer(diff_id, "gzip", digest, notify=lambda _: None),
                  "rl:[test-unpack]")
    return diff_id


@pytest.mark.parametrize("layer", LAYERS, ids=lambda m: m.name)
def test_malicious_layer_in_userns(tmp_path, store, layer):
    sentinel = make_sentinel(tmp_path)
    real = {m.name: m for m in malicious_layers(sentinel)}[layer.name]
    before = snapshot(sentinel)
    passwd = _passwd_state()
    diff_id = sha256_digest(real.data)
    if real.refused:
        with pytest.raises(RlError):
            _unpack(store, real.data)
        assert not store.has_layer(diff_id)
        # nothing half-extracted stays under a layer name, and the temporary is gone
        assert [p.name for p in store.paths.layers.iterdir() if p.name != "l"] == []
    else:
        _unpack(store, real.data)
        assert store.has_layer(diff_id)
        if real.check:
            real.check(store.layer_dir(diff_id))
    assert snapshot(sentinel) == before
    assert _passwd_state() == passwd


def test_userns_unpack_is_not_fooled_by_a_symlinked_store(tmp_path, store):
    """A planted link from a previous hostile layer in the same store changes nothing."""
    sentinel = make_sentinel(tmp_path)
    before = snapshot(sentinel)
    first = _unpack(store, LayerBuilder().symlink("etc", str(sentinel)).build())
    second = _unpack(store, LayerBuilder().dir("etc").file("etc/file", b"pwned").build())
    assert os.path.islink(store.layer_dir(first) / "etc")
    assert (store.layer_dir(second) / "etc/file").read_bytes() == b"pwned"
    assert snapshot(sentinel) == before

