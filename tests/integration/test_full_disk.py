"""The data directory full during `rl run` (issue 13 item 6): every kind of run (--rootfs,
an image, -d, a name) ends with one `Error:` naming the step, the path and ENOSPC, exit 125,
no traceback, and leaves no container, name or runtime record behind.

The data directory is a small tmpfs, mounted in a user namespace where the test user is root
(an unprivileged user may mount tmpfs there: `unshare --map-root-user --map-auto --mount`),
filled to a few kB so that each of rl's writes in turn is the one that fails."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import need_tool
from tests.integration.conftest import run_image  # noqa: F401  (the image fixture's module)

pytestmark = pytest.mark.integration

# Each run prints `status=N` then what rl said; rl's data and runtime listings follow.
SCRIPT = r'''
set -u
mount -t tmpfs -o size=8m tmpfs "$D" || exit 99
"$RL" pull -q --tls-verify=false "$IMAGE" >/dev/null || exit 98
for free in 0 4 8 12; do
  for args in "--rm --rootfs $BB true" "--rootfs $BB true" "-d --rootfs $BB sleep 5" \
              "--rm --name full --rootfs $BB true" "--rm $IMAGE true" "-d --rm $IMAGE sleep 5"; do
    rm -f "$D/fill"
    avail=$(( $(stat -f -c '%a*%S' "$D") - free * 1024 ))
    head -c "$avail" /dev/zero > "$D/fill" 2>/dev/null
    "$RL" run --network none $args >/dev/null 2>"$D.err"
    echo "run free=$free $args: status=$?"
    cat "$D.err"
    rm -f "$D/fill"
    "$RL" rm -a -f >/dev/null
  done
done
echo "containers=[$(ls -A "$D/rootless/containers")] names=[$(ls -A "$D/rootless/names")]"
'''


def test_a_full_data_directory_is_an_error_that_names_it(rl, busybox_rootfs, image, tmp_path):
    need_tool("unshare")
    need_tool("newuidmap")
    data = tmp_path / "small"
    data.mkdir()
    env = dict(rl.env, D=str(data), RL=rl.exe, BB=str(busybox_rootfs), IMAGE=image("busybox"),
               XDG_DATA_HOME=str(data))
    r = subprocess.run(["unshare", "--map-auto", "--map-root-user", "--mount", "sh", "-c", SCRIPT],
                       env=env, capture_output=True, text=True, timeout=600)
    assert "containers=[] names=[]" in r.stdout, r.stdout + r.stderr
    runs = r.stdout.split("\nrun ")
    assert len(runs) == 24, r.stdout
    failed = 0
    for run in runs:
        head, _, said = run.partition("\n")
        if head.endswith("status=0"):
            continue  # enough room for this one after all
        failed += 1
        errors = [line for line in said.splitlines() if line.startswith("Error:")]
        assert head.endswith("status=125"), run
        assert "Traceback" not in said, run
        assert len(errors) == 1 and errors[0].endswith("(ENOSPC)"), run
        assert str(data / "rootless") in errors[0], run
        assert f"Hint: free space on the file system of {data / 'rootless'}" in said, run
    assert failed >= 12, r.stdout  # with 0 and 4 kB free no run has room
    # Nothing was left for `rm -a -f` to find either: the runtime directory is empty too.
    assert [p.name for p in rl.runtime.iterdir() if p.name not in ("net", "seccomp", "locks")] == []
