"""The build cache: a step's key → what the step produced, so an unchanged rebuild runs nothing.

A key chains: sha256 of the previous step's key, the instruction with its arguments after
substitution, the build args in scope and, for COPY/ADD, the content of the sources (names,
modes, owners, sizes, bytes). A change anywhere changes every key after it, so a changed
COPY rebuilds from that step on, and only from there.

    build-cache/<key>.json   {"created": ..., "diff_id"?, "blob"?, "layer"? (descriptor),
                              "tar_size"?}

Records keep their layers and blobs alive in the store (Store.cache_records).
`rl builder prune` removes every record; `rl image prune` removes the records whose layer
no remaining image uses (podman's intermediate images go with a prune the same way).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from typing import Any


def chain_key(parent: str, *parts: Any) -> str:
    h = hashlib.sha256(parent.encode())
    h.update(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def hash_tree(paths: Iterable[tuple[str, str]],
              excluded: Callable[[str], bool] | None = None) -> str:
    """The content hash of COPY sources: (context path, host path) pairs, each a file, a
    symlink or a directory walked in sorted order, skipping what `excluded` names."""
    h = hashlib.sha256()
    for shown, path in paths:
        _hash_entry(h, shown, os.stat(path), path, excluded,
                    top=True)
    return h.hexdigest()


def _hash_entry(h: Any, shown: str, st: Any, path: str,
                excluded: Callable[[str], bool] | None, top: bool = False) -> None:
    import stat

    if not top:
        st = os.lstat(path)
    h.update(f"{shown}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0".encode())
    if stat.S_ISLNK(st.st_mode):
        h.update(os.readlink(path).encode(errors="surrogateescape"))
    elif stat.S_ISREG(st.st_mode):
        h.update(f"{st.st_size}\0".encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    elif stat.S_ISDIR(st.st_mode):
        for name in sorted(os.listdir(path)):
            child = f"{shown}/{name}" if shown else name
            if excluded is not None and excluded(child):
                continue  # (an exception below an excluded directory is not hashed: rare)
            _hash_entry(h, child, None, os.path.join(path, name), excluded)
    h.update(b"\1")


class BuildCache:
    """Records in the store's cache directory (the store reads them for garbage collection)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.dir = store.cache_dir

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.dir, f"{key}.json")) as f:
                data = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        final = os.path.join(self.dir, f"{key}.json")
        tmp = f"{final}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, final)
