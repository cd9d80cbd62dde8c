"""A container's own storage: upper/work for the overlay, the mount point, and the files rl
writes for it (/etc/hostname, /etc/hosts, /etc/resolv.conf) — never written into the image.

    containers/<id>/upper     the overlay's upper layer (everything the container writes)
    containers/<id>/work      overlayfs's work directory (same filesystem as upper)
    containers/<id>/merged    the mount point of the container's root
    containers/<id>/userdata  hostname, hosts, resolv.conf, bind-mounted over the image's
    containers/<id>/config.json  what was run (for ps/inspect/rm)
"""

from __future__ import annotations

import os

from rootless.errors import SetupError, describe_oserror
from rootless.fileio import read_or_empty

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def new_container_id() -> str:
    return os.urandom(32).hex()


class ContainerDirs:
    """Plain strings rather than pathlib: this is on `rl run`'s start-up path."""

    __slots__ = ("root",)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)

    @property
    def upper(self) -> str:
        return os.path.join(self.root, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.root, "work")

    @property
    def merged(self) -> str:
        return os.path.join(self.root, "merged")

    @property
    def userdata(self) -> str:
        return os.path.join(self.root, "userdata")

    @property
    def config(self) -> str:
        return os.path.join(self.root, "config.json")

    def create(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.root), mode=0o700, exist_ok=True)
            os.mkdir(self.root, 0o700)
            for d in (self.upper, self.work, self.merged, self.userdata):
                os.mkdir(d, 0o755)
        except OSError as exc:
            raise SetupError(
                describe_oserror(f"creating the container's storage in {self.root}", exc),
                hint="check that the storage directory is writable (see 'rl doctor storage')",
            ) from None

    def write_file(self, name: str, text: str) -> str:
        path = os.path.join(self.userdata, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        return path

    def write_config(self, data: dict[str, Any]) -> None:
        import json  # indented for people who read it; rl-oci's start-up never writes one

        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=2))
        os.replace(tmp, self.config)

    def remove(self) -> bool:
        """Remove as the host user; False when files owned by subordinate ids remain (the
        caller then removes them from inside the user namespace)."""
        if not os.path.exists(self.root):
            return True
        import shutil

        try:
            shutil.rmtree(self.root)
            return True
        except PermissionError:
            return False
        except FileNotFoundError:
            return True


def remove_tree_as_root(path: str) -> None:
    """Remove a container's storage as root of its user namespace (files of subordinate ids,
    overlay's mode-000 work/work). A small walk rather than shutil.rmtree: the helper runs it
    on the exit path of every `rl run --rm`, and importing shutil costs ~4 ms there."""

    def remove(dir_path: str) -> None:
        try:
            entries = list(os.scandir(dir_path))
        except FileNotFoundError:
            return
        except PermissionError:
            os.chmod(dir_path, 0o700)
            entries = list(os.scandir(dir_path))
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    remove(entry.path)
                else:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(dir_path)
        except FileNotFoundError:
            pass

    remove(path)


def hosts_file(hostname: str, name: str | None, extra: list[tuple[str, str]], host_ip: str | None) -> str:
    lines = [
        "127.0.0.1\tlocalhost localhost.localdomain localhost4 localhost4.localdomain4",
        "::1\tlocalhost localhost.localdomain localhost6 localhost6.localdomain6",
    ]
    names = hostname + (f" {name}" if name and name != hostname else "")
    lines.append(f"127.0.1.1\t{names}")
    if host_ip:
        lines.append(f"{host_ip}\thost.containers.internal host.docker.internal")
    for host, ip in extra:
        lines.append(f"{ip}\t{host}")
    return "\n".join(lines) + "\n"


def host_resolv_conf(path: str = "/etc/resolv.conf") -> str:
    return read_or_empty(path)
