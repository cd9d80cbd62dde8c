"""Registry credentials: read from the files podman and docker write, saved by `rl login`.

Looked up in this order, first match wins (containers-auth.json(5) and docker's config.json):
  1. $REGISTRY_AUTH_FILE
  2. rl's own auth file, $XDG_CONFIG_HOME/rootless/auth.json (written by `rl login`)
  3. podman's ${XDG_RUNTIME_DIR}/containers/auth.json, then ~/.config/containers/auth.json
  4. docker's ~/.docker/config.json (or $DOCKER_CONFIG/config.json)
All share one format: {"auths": {"<registry>": {"auth": base64("user:password")}}}, with an
optional "identitytoken" (an OAuth2 refresh token). Docker keys Docker Hub as
"https://index.docker.io/v1/"; keys are compared after dropping scheme and path.
Credential helpers (credHelpers, credsStore) are not run: rl executes no helper programs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rootless.errors import ConfigError
from rootless.image.reference import normalize_registry
from rootless.paths import Paths


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)
    source: str | None = None  # the file they came from, for messages


def registry_key(text: str) -> str:
    """The registry host a login or auth-file key names: scheme, path and Hub aliases dropped."""
    text = text.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    return normalize_registry(text.lower())


def auth_file_candidates(paths: Paths, env: Mapping[str, str]) -> list[Path]:
    """Every file find_credentials reads, in order of precedence."""
    files: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    files.append(paths.auth_file)
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    files.append(config_home / "containers" / "auth.json")
    docker_dir = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    files.append(docker_dir / "config.json")
    return files


def _read_auths(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"reading credentials from {path}: {exc}",
            "fix or remove the file, then run `rl login` again",
        ) from None
    auths = data.get("auths") if isinstance(data, dict) else None
    return auths if isinstance(auths, dict) else {}


def _decode_entry(entry: object, path: Path) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    token = entry.get("identitytoken") or None
    encoded = entry.get("auth")
    username = password = ""
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(
                f"reading credentials from {path}: an 'auth' field is not base64 of user:password",
                "run `rl login` again to rewrite it",
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ConfigError(f"reading credentials from {path}: an 'auth' field has no ':'")
    elif not token:
        return None
    return Credentials(username, password, token if isinstance(token, str) else None, str(path))


def find_credentials(registry: str, paths: Paths, env: Mapping[str, str]) -> Credentials | None:
    """The credentials for `registry` from the first auth file that has them, or None."""
    wanted = registry_key(registry)
    for path in auth_file_candidates(paths, env):
        for key, entry in _read_auths(path).items():
            if registry_key(key) == wanted:
                creds = _decode_entry(entry, path)
                if creds is not None:
                    return creds
    return None


def _write_auths(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".auth-", suffix=".json", dir=path.parent)
    try:
        # mkstemp creates the file 0600: the secret is never readable by others, not even briefly.
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_own(paths: Paths) -> dict[str, object]:
    try:
        data = json.loads(paths.auth_file.read_bytes())
    except FileNotFoundError:
        return {"auths": {}}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"reading {paths.auth_file}: {exc}", f"remove {paths.auth_file} and log in again"
        ) from None
    if not isinstance(data, dict):
        data = {}
    if not isinstance(data.get("auths"), dict):
        data["auths"] = {}
    return data


def save_credentials(paths: Paths, registry: str, username: str, password: str) -> None:
    """Store `username:password` for `registry` in rl's auth file (0600, atomic replace)."""
    data = _load_own(paths)
    auths = data["auths"]
    assert isinstance(auths, dict)
    key = registry_key(registry)
    for old in [k for k in auths if registry_key(k) == key]:
        del auths[old]
    auths[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _write_auths(paths.auth_file, data)


def remove_credentials(paths: Paths, registry: str) -> bool:
    """Forget `registry` in rl's auth file; False when it held nothing for it."""
    if not paths.auth_file.exists():
        return False
    data = _load_own(paths)
    auths = data["auths"]
    assert isinstance(auths, dict)
    key = registry_key(registry)
    found = [k for k in auths if registry_key(k) == key]
    if not found:
        return False
    for old in found:
        del auths[old]
    _write_auths(paths.auth_file, data)
    return True


def remove_all_credentials(paths: Paths) -> bool:
    """Forget every registry in rl's auth file; False when there was nothing."""
    data = _load_own(paths)
    auths = data["auths"]
    if not auths:
        return False
    data["auths"] = {}
    _write_auths(paths.auth_file, data)
    return True
