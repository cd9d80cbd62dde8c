"""A real project's build: tests/pyapp, a Python application built in two stages (a virtual
environment made with the package index, then a slim image with only that environment),
built and run with rl.

The base images are the host's own Python (scripts/build_test_images.py push_python_images);
the package index is a PEP 503 index on 127.0.0.1 serving the wheels Debian ships for pip,
setuptools and wheel (tests keep their traffic on this machine). The same Containerfile
builds against PyPI with --build-arg INDEX_URL=https://pypi.org/simple.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RlRunner, need
from tests.registry_fixtures import load_image_builder

pytestmark = pytest.mark.integration

APP = Path(__file__).resolve().parents[1] / "pyapp"
WHEELS = Path("/usr/share/python-wheels")


@pytest.fixture(scope="module")
def python_registry(test_registry) -> str:
    need(Path(load_image_builder().PYTHON).exists(), "python3.11 is not installed")
    load_image_builder().push_python_images(test_registry.url_host)
    return str(test_registry.url_host)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """http://127.0.0.1:PORT/: one directory per project, as pip reads a simple index."""
    for project in ("pip", "setuptools", "wheel"):
        need(any(WHEELS.glob(f"{project}-*.whl")),
             f"no {project} wheel in {WHEELS} (apt-get install python3-{project}-whl)")
    root = tmp_path_factory.mktemp("index")
    for wheel in WHEELS.glob("*.whl"):
        project = root / wheel.name.split("-")[0].lower()
        project.mkdir(exist_ok=True)
        shutil.copy(wheel, project / wheel.name)
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_multi_stage_python_application(rl: RlRunner, python_registry: str, index: str) -> None:
    try:
        build_and_run(rl, python_registry, index)
    finally:
        # ~150 MB of layers, files of subordinate ids that pytest could not remove itself
        rl("rmi", "-a", "-f")
        rl("builder", "prune", "-f")
        rl("image", "prune", "-f")


def build_and_run(rl: RlRunner, python_registry: str, index: str) -> None:
    build = ["build", "--tls-verify=false", "--network", "host",
             "--build-arg", f"REGISTRY={python_registry}", "--build-arg", f"INDEX_URL={index}",
             "-t", "greeter", str(APP)]
    r = rl(*build, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Successfully installed greeter-1.0" in r.stdout, r.stdout[-3000:]
    image_id = r.stdout.strip().splitlines()[-1]

    r = rl("run", "--rm", "--network", "none", "greeter")
    assert r.stdout == "hello, world, from greeter 1.0 as uid 1000 in /venv\n", r.stderr
    r = rl("run", "--rm", "--network", "none", "greeter", "rl")
    assert r.stdout.startswith("hello, rl, "), r.stderr

    # the final image is the slim base and the environment: no sources, no build tools
    r = rl("run", "--rm", "--network", "none", "--entrypoint", "sh", "greeter", "-c",
           "ls /; test -d /usr/lib/python3.11/ensurepip || echo no-ensurepip; "
           "test -d /usr/share/python-wheels || echo no-wheels; ls /venv/bin")
    lines = r.stdout.split()
    assert "src" not in lines and "no-ensurepip" in lines and "no-wheels" in lines, r.stdout
    assert "greet" in lines and "pip" in lines, r.stdout
    (info,) = json.loads(rl("image", "inspect", "greeter").stdout)
    assert len(info["RootFS"]["Layers"]) == 3  # busybox, slim Python, the environment
    assert info["Config"]["User"] == "1000:1000"

    # unchanged: the whole build from the cache, the same image
    r = rl(*build, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Successfully installed" not in r.stdout
    assert r.stdout.strip().splitlines()[-1] == image_id
