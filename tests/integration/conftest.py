"""Fixtures of the integration tests that run images from the test registry."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest


@pytest.fixture
def image(test_registry) -> Callable[[str], str]:
    """image("busybox") -> HOST:PORT/rltest/busybox:latest on the session's test registry."""

    def name(short: str) -> str:
        return f"{test_registry.url_host}/rltest/{short}:latest"

    return name


def run_image(rl, *args: str, **kw) -> subprocess.CompletedProcess:
    """rl run --rm --network none --tls-verify=false ARGS... (the registry is plain HTTP)."""
    return rl("run", "--rm", "--network", "none", "--tls-verify=false", *args, **kw)
