"""Who creates a missing working directory (podman 4.3's rules; the runs are in
tests/integration/test_workdir.py)."""

from __future__ import annotations

import pytest

from rootless.runtime.container import workdir_creation
from rootless.spec import Volume


def _vol(dest: str) -> Volume:
    return Volume(kind="bind", source="/host", destination=dest, readonly=False, options="")


@pytest.mark.parametrize(("flag", "image", "volumes", "expected"), [
    (None, "/srv/app", [], "image"),          # the image's WorkingDir: created for its user
    (None, None, [], None),                   # neither: "/" by default, nothing to create
    ("/srv/app", "/other", [], None),         # an explicit -w must exist
    ("/src/sub", None, [_vol("/src")], "volume"),
    ("/src", None, [_vol("/src/")], "volume"),
    ("/srcx/sub", None, [_vol("/src")], None),  # a prefix of the name is not a parent
    ("/src/../etc", None, [_vol("/src")], None),
])
def test_workdir_creation(flag, image, volumes, expected):
    assert workdir_creation(flag, image, volumes) == expected
