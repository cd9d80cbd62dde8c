"""Secrets as files, never as environment variables.

Anyone who can read /proc/PID/environ (the same user, ptrace-capable processes, crash dumps)
sees an environment variable; a file is readable only by whom its mode says. `rl secret
create` stores each secret 0600 in a 0700 directory under the data dir; `rl run --secret`
reads it in the launcher and PID 1 writes it, mode 0400 and owned by the container user, into a
tmpfs mounted on /run/secrets for this container alone. Nothing goes to the container's upper
layer or to the config rl keeps for `inspect` (only the names travel in the spec).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rootless.errors import RlError, UsageError
from rootless.kernel import constants as k

TYPE_CHECKING = False  # typing costs ~2 ms of `rl run`: annotations only
if TYPE_CHECKING:
    from typing import Any

MAX_SIZE = 512 * 1024  # podman's limit for one secret
SECRETS_DIR = "/run/secrets"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")


def store_dir(data_dir: Path) -> Path:
    return data_dir / "secrets"


def check_name(name: str, what: str = "secret name") -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(f"invalid {what} {name!r}: use letters, digits, '_', '.' and '-' "
                         "(up to 253, not starting with '.' or '-')")
    return name


def create(data_dir: Path, name: str, data: bytes, replace: bool = False) -> Path:
    """Store a secret 0600 (written to a temporary name, then renamed into place)."""
    check_name(name)
    if not data:
        raise UsageError("secret data must not be empty")
    if len(data) > MAX_SIZE:
        raise UsageError(f"secret data is {len(data)} bytes: the limit is {MAX_SIZE}")
    directory = store_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / name
    if path.exists() and not replace:
        raise RlError(f"secret name {name!r} is already in use",
                      hint=f"remove it first ('rl secret rm {name}') or use --replace")
    tmp = directory / f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def listing(data_dir: Path) -> list[tuple[str, int, float]]:
    """(name, size, mtime) of each stored secret, by name."""
    directory = store_dir(data_dir)
    out = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith("."):
            continue
        st = os.lstat(directory / name)
        out.append((name, st.st_size, st.st_mtime))
    return out


def remove(data_dir: Path, name: str) -> None:
    check_name(name)
    try:
        os.unlink(store_dir(data_dir) / name)
    except FileNotFoundError:
        raise RlError(f"no secret with name or id {name!r} found") from None


def read(data_dir: Path, name: str) -> bytes:
    path = store_dir(data_dir) / check_name(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"no secret with name {name!r} found",
                         hint=f"create it with 'rl secret create {name} FILE'") from None
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_SIZE + 1)[:MAX_SIZE]


def parse_secret_opt(text: str) -> tuple[str, str]:
    """`NAME`, `NAME:TARGET` or podman's `NAME,target=TARGET[,type=mount]` -> (name, target)."""
    source, _, opts = text.partition(",")
    target = None
    if ":" in source:
        source, target = source.split(":", 1)
    for opt in [o for o in opts.split(",") if o]:
        key, _, value = opt.partition("=")
        if key == "target":
            target = value
        elif key == "type" and value == "env":
            raise UsageError(f"--secret {text}: secrets as environment variables are not supported",
                             hint="the environment is readable in /proc/PID/environ; read the "
                                  "file /run/secrets/NAME instead")
        elif key == "type" and value == "mount":
            continue
        else:
            raise UsageError(f"--secret {text}: unknown option {opt!r}",
                             hint="use --secret NAME[:TARGET] or NAME,target=TARGET")
    check_name(source)
    target = target or source
    if target.startswith(SECRETS_DIR + "/"):
        target = target[len(SECRETS_DIR) + 1:]
    check_name(target, "secret target")
    return source, target


def load(data_dir: Path, opts: list[str]) -> list[tuple[str, bytes]]:
    """(target, data) for each --secret, read now so PID 1 needs no host path later."""
    out: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for text in opts:
        source, target = parse_secret_opt(text)
        if target in seen:
            raise UsageError(f"--secret {text}: {SECRETS_DIR}/{target} is given twice")
        seen.add(target)
        out.append((target, read(data_dir, source)))
    return out


def tmpfs_op(secrets: list[tuple[str, bytes]]) -> Any:
    """The mount of the private tmpfs that holds the secrets (size: their pages + one)."""
    from rootless.primitives.mounts import MountOp

    pages = sum((len(data) + 4095) // 4096 for _, data in secrets) + 1
    return MountOp("mount", SECRETS_DIR, "tmpfs", "tmpfs",
                   k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, f"mode=0755,size={pages * 4096}")


def write_into_container(lib: Any, secrets: list[tuple[str, bytes]], uid: int, gid: int,
                         tmpfs_flags: int, tmpfs_data: str) -> None:
    """PID 1, after pivot_root and before dropping capabilities: write each secret 0400,
    owned by the container user, then make the tmpfs read-only."""
    for target, data in secrets:
        path = f"{SECRETS_DIR}/{target}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if uid or gid:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o400)
        finally:
            os.close(fd)
    lib.mount(None, SECRETS_DIR, None, k.MS_REMOUNT | k.MS_RDONLY | tmpfs_flags, tmpfs_data)
