"""The image commands run as a user would: `rl pull|images|rmi|image prune|load|save` in a
subprocess, against a real local registry, with a private XDG_DATA_HOME."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.registry_fixtures import push_test_images, start_registry

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        push_test_images(reg)
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def rl(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "RL_"))}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_RUNTIME_DIR=os.environ.get("XDG_RUNTIME_DIR", str(tmp_path / "run")),
               PYTHONPATH=str(REPO))

    def run(*args: str, check: bool = True, stdin: bytes | None = None):
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from rootless.main import main; sys.exit(main())",
             *args], env=env, capture_output=True, input=stdin)
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
        if check:
            assert proc.returncode == 0, f"rl {' '.join(args)}: {proc.returncode}\n{err}"
        return proc.returncode, out, err

    run.data = tmp_path / "data" / "rootless"  # type: ignore[attr-defined]
    return run


def test_pull_images_rmi(registry, rl):
    ref = f"{registry.url_host}/rltest/busybox"
    _, out, err = rl("pull", "--tls-verify=false", ref)
    image_id = out.strip()
    assert len(image_id) == 64
    assert "Copying blob" in err and "Writing manifest" in err
    _, out, err = rl("pull", "-q", "--tls-verify=false", ref)
    assert out.strip() == image_id and err == ""
    _, out, _ = rl("images")
    header, row = out.splitlines()
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert row.split()[:3] == [ref, "latest", image_id[:12]]
    _, out, _ = rl("images", "--format", "json")
    (entry,) = json.loads(out)
    assert entry["Id"] == image_id and entry["Names"] == [f"{ref}:latest"]
    _, out, _ = rl("images", "--format", "{{.Repository}}|{{.Tag}}|{{.ID}}")
    assert out.strip() == f"{ref}|latest|{image_id[:12]}"
    _, out, _ = rl("images", "-q")
    assert out.strip() == image_id[:12]
    code, _, err = rl("images", "--format", "{{.Nope}}", check=False)
    assert code == 125 and "Nope" in err
    _, out, _ = rl("rmi", ref)
    assert out.splitlines() == [f"Untagged: {ref}:latest", f"Deleted: {image_id}"]
    assert list((rl.data / "blobs" / "sha256").iterdir()) == []
    code, _, err = rl("rmi", ref, check=False)
    assert code == 1 and "image not known" in err


def test_rmi_refused_while_a_container_uses_the_image(registry, rl):
    ref = f"{registry.url_host}/rltest/busybox"
    _, out, _ = rl("pull", "-q", "--tls-verify=false", ref)
    container = rl.data / "containers" / "c1"
    container.mkdir(parents=True)
    (container / "config.json").write_text(json.dumps({"image_id": f"sha256:{out.strip()}"}))
    code, _, err = rl("rmi", ref, check=False)
    assert code == 2 and "in use" in err
    _, out, _ = rl("rmi", "-f", ref)
    assert out.strip() == f"Untagged: {ref}:latest"
    _, out, _ = rl("images")
    assert "<none>" in out
    # prune keeps the dangling image while the container exists
    _, out, _ = rl("image", "prune", "-f")
    assert out.strip() == ""
    shutil.rmtree(container)
    _, out, _ = rl("image", "prune", "-f")
    assert len(out.strip()) == 64
    assert list((rl.data / "blobs" / "sha256").iterdir()) == []


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_then_load_round_trip(registry, rl, tmp_path, fmt):
    ref = f"{registry.url_host}/rltest/multilayer"
    _, out, _ = rl("pull", "-q", "--tls-verify=false", ref)
    image_id = out.strip()
    archive = tmp_path / "image.tar"
    rl("save", "--format", fmt, "-o", str(archive), ref)
    rl("rmi", ref)
    _, out, _ = rl("load", "-i", str(archive))
    assert out.strip() == f"Loaded image: {ref}:latest"
    _, out, _ = rl("images", "--format", "json")
    (entry,) = json.loads(out)
    assert entry["Id"] == image_id  # the same config: the same image id
    # from stdin too
    rl("rmi", ref)
    _, out, _ = rl("load", stdin=archive.read_bytes())
    assert out.strip() == f"Loaded image: {ref}:latest"


def test_load_podman_save_archives(registry, rl, tmp_path):
    """Interop: archives written by podman itself (docker-archive and oci-archive)."""
    if shutil.which("podman") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("podman is not installed")
        pytest.skip("podman is not installed")
    ref = f"{registry.url_host}/rltest/nonroot"
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="rlp", dir="/tmp"))  # podman: runroot < 50 chars
    base = ["podman", "--root", str(root / "root"), "--runroot", str(root / "run"),
            "--storage-driver", "vfs"]
    pulled = subprocess.run([*base, "pull", "-q", "--tls-verify=false", ref],
                            capture_output=True, text=True)
    if pulled.returncode != 0:
        pytest.skip(f"podman cannot pull here: {pulled.stderr.strip()[-200:]}")
    for fmt in ("docker-archive", "oci-archive", "oci-dir"):
        out = tmp_path / f"p-{fmt}"
        subprocess.run([*base, "save", "--format", fmt, "-o", str(out), ref], check=True,
                       capture_output=True)
        _, text, _ = rl("load", "-i", str(out))
        assert "Loaded image" in text, fmt
        _, js, _ = rl("images", "--format", "json")
        assert any(e["Names"] for e in json.loads(js)), fmt
        rl("rmi", "-a", "-f")
    subprocess.run([*base, "rmi", "-a", "-f"], capture_output=True)
    subprocess.run(["rm", "-rf", str(root)], capture_output=True)
