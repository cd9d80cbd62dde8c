"""`rl login` / `rl logout` against a real registry, and where credentials are looked up."""

from __future__ import annotations

import base64
import io
import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registry_fixtures import RunningRegistry, start_registry  # noqa: E402

from rootless.image.auth import (  # noqa: E402
    find_credentials,
    remove_credentials,
    save_credentials,
)
from rootless.image.registry import RegistryClient  # noqa: E402
from rootless.main import main  # noqa: E402
from rootless.paths import Paths  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME and XDG dirs, so no real credentials are read or written."""
    for var in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_DATA_HOME", "RL_STORAGE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


def env_of(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_RUNTIME_DIR": str(home / "run"),
    }


def paths_of(home: Path) -> Paths:
    return Paths.from_env(env_of(home))


@pytest.fixture(scope="module", params=["token", "basic"])
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRegistry]:
    reg = start_registry(tmp_path_factory.mktemp(f"login-{request.param}"), request.param)
    try:
        yield reg
    finally:
        reg.stop()


def rl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_login_and_logout(
    registry: RunningRegistry, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = registry.url_host
    assert registry.username is not None and registry.password is not None
    code, out, err = rl(
        capsys, "login", "--tls-verify=false", "-u", registry.username, "-p", "wrong", host
    )
    assert code == 125
    assert "Error:" in err and "invalid username or password" in err and host in err
    auth_file = paths_of(home).auth_file
    assert not auth_file.exists()  # nothing saved when the registry says no

    code, out, err = rl(
        capsys,
        "login",
        "--tls-verify=false",
        "-u",
        registry.username,
        "-p",
        registry.password,
        host,
    )
    assert (code, out.strip()) == (0, "Login Succeeded!"), err
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(auth_file.parent.stat().st_mode) == 0o700
    saved = json.loads(auth_file.read_text())["auths"][host]["auth"]
    assert base64.b64decode(saved).decode() == f"{registry.username}:{registry.password}"

    creds = find_credentials(host, paths_of(home), env_of(home))
    assert creds is not None and creds.username == registry.username
    with RegistryClient(host, insecure=True, credentials=creds) as client:
        client.ping()

    code, out, _ = rl(capsys, "login", "--tls-verify=false", host)
    assert code == 0 and f"Already logged in to {host}" in out

    code, out, _ = rl(capsys, "logout", host)
    assert (code, out.strip()) == (0, f"Removed login credentials for {host}")
    code, _, err = rl(capsys, "logout", host)
    assert code == 125 and f"not logged into {host}" in err


def test_login_password_stdin(
    registry: RunningRegistry,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert registry.username is not None
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{registry.password}\n"))
    code, out, err = rl(
        capsys,
        "login",
        "--no-tls-verify",
        "--username",
        registry.username,
        "--password-stdin",
        registry.url_host,
    )
    assert (code, out.strip()) == (0, "Login Succeeded!"), err
    code, out, _ = rl(capsys, "logout", "--all")
    assert (code, out.strip()) == (0, "Removed login credentials for all registries")
    assert find_credentials(registry.url_host, paths_of(home), env_of(home)) is None


def test_login_requires_tls_by_default(
    registry: RunningRegistry, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert registry.username is not None and registry.password is not None
    code, _, err = rl(
        capsys, "login", "-u", registry.username, "-p", registry.password, registry.url_host
    )
    assert code == 125 and "--tls-verify=false" in err
    assert not paths_of(home).auth_file.exists()


def test_login_usage_errors(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = rl(capsys, "login", "--password-stdin", "127.0.0.1:1")
    assert code == 125 and "--password-stdin needs --username" in err
    code, _, err = rl(capsys, "login", "-u", "x", "127.0.0.1:1")
    assert code == 125 and "no password given" in err
    code, _, err = rl(capsys, "login", "--tls-verify=maybe", "-u", "x", "-p", "y", "127.0.0.1:1")
    assert code == 125 and "expected true or false" in err
    code, _, err = rl(capsys, "logout")
    assert code == 125 and "--all" in err


# where credentials come from ---------------------------------------------------------------
def write_auths(path: Path, auths: dict[str, dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))


def basic(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_lookup_order(home: Path) -> None:
    env = env_of(home)
    paths = paths_of(home)
    docker = home / ".docker" / "config.json"
    podman_user = home / "config" / "containers" / "auth.json"
    podman_run = home / "run" / "containers" / "auth.json"
    explicit = home / "explicit.json"

    write_auths(
        docker, {"https://index.docker.io/v1/": basic("docker", "d"), "quay.io": basic("dq", "q")}
    )
    assert find_credentials("docker.io", paths, env).username == "docker"  # type: ignore[union-attr]
    assert find_credentials("index.docker.io", paths, env).username == "docker"  # type: ignore[union-attr]
    write_auths(podman_user, {"docker.io": basic("podman-user", "p")})
    assert find_credentials("docker.io", paths, env).username == "podman-user"  # type: ignore[union-attr]
    write_auths(podman_run, {"docker.io": basic("podman-run", "p")})
    assert find_credentials("docker.io", paths, env).username == "podman-run"  # type: ignore[union-attr]
    save_credentials(paths, "docker.io", "rl-user", "secret:with:colons")
    creds = find_credentials("docker.io", paths, env)
    assert creds is not None and (creds.username, creds.password) == (
        "rl-user",
        "secret:with:colons",
    )
    write_auths(explicit, {"docker.io": basic("explicit", "e")})
    env["REGISTRY_AUTH_FILE"] = str(explicit)
    assert find_credentials("docker.io", paths, env).username == "explicit"  # type: ignore[union-attr]
    # A registry only one file knows is still found further down the list.
    assert find_credentials("quay.io", paths, env).username == "dq"  # type: ignore[union-attr]
    assert find_credentials("ghcr.io", paths, env) is None
    assert "secret" not in repr(creds)


def test_identity_token_and_remove(home: Path) -> None:
    env, paths = env_of(home), paths_of(home)
    write_auths(paths.auth_file, {"registry.example.com": {"identitytoken": "refresh-me"}})
    creds = find_credentials("https://registry.example.com/v2/", paths, env)
    assert creds is not None and creds.identity_token == "refresh-me"
    assert remove_credentials(paths, "registry.example.com") is True
    assert remove_credentials(paths, "registry.example.com") is False
    assert find_credentials("registry.example.com", paths, env) is None


def test_broken_auth_file_is_a_clear_error(home: Path) -> None:
    from rootless.errors import ConfigError

    env, paths = env_of(home), paths_of(home)
    paths.auth_file.parent.mkdir(parents=True)
    paths.auth_file.write_text("{not json")
    with pytest.raises(ConfigError, match=str(paths.auth_file)):
        find_credentials("quay.io", paths, env)
    write_auths(paths.auth_file, {"quay.io": {"auth": "!!!"}})
    with pytest.raises(ConfigError, match="not base64"):
        find_credentials("quay.io", paths, env)
