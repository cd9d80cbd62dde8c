"""RUN --mount=type=bind,from=: which layer directories overlayfs would merge for a path
(rootless.build.run.overlay_sources). Whiteouts need mknod: the build corpus covers them."""

from __future__ import annotations

import os
from pathlib import Path

from rootless.build.run import overlay_sources


def layers(tmp_path: Path, *trees: dict[str, str | None]) -> list[str]:
    """Layer directories, top first; a None value is a directory."""
    out = []
    for i, tree in enumerate(trees):
        root = tmp_path / f"layer{i}"
        root.mkdir()
        for name, text in tree.items():
            path = root / name
            if text is None:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        out.append(str(root))
    return out


def test_a_directory_in_several_layers_merges_them(tmp_path: Path) -> None:
    top, mid, bottom = layers(tmp_path, {"out/a": "1"}, {"other": "x"}, {"out/b": "2"})
    assert overlay_sources([top, mid, bottom], "out") == ("dir", [f"{top}/out", f"{bottom}/out"])
    assert overlay_sources([top, mid, bottom], "") == ("dir", [top, mid, bottom])
    assert overlay_sources([top, mid, bottom], "nowhere") is None


def test_a_file_shows_from_the_top_layer_that_has_it(tmp_path: Path) -> None:
    top, bottom = layers(tmp_path, {"out/a": "new"}, {"out/a": "old", "out/b": "2"})
    assert overlay_sources([top, bottom], "out/a") == ("file", [f"{top}/out/a"])
    assert overlay_sources([top, bottom], "out/b") == ("file", [f"{bottom}/out/b"])


def test_a_non_directory_hides_the_directories_below(tmp_path: Path) -> None:
    top, bottom = layers(tmp_path, {"out": "now a file"}, {"out/a": "1"})
    assert overlay_sources([top, bottom], "out/a") is None
    assert overlay_sources([top, bottom], "out") == ("file", [f"{top}/out"])


def test_an_opaque_directory_hides_the_layers_below(tmp_path: Path) -> None:
    top, bottom = layers(tmp_path, {"out/a": "1"}, {"out/b": "2", "out/deep/c": "3"})
    os.setxattr(f"{top}/out", "user.overlay.opaque", b"y")
    assert overlay_sources([top, bottom], "out") == ("dir", [f"{top}/out"])
    assert overlay_sources([top, bottom], "out/deep") is None
