"""`rl doctor`: check the host and say exactly what to fix.

Each check returns one Check per question: ok / warning / failure, what it found and, when it
is not ok, the exact command or file change that fixes it. Failures are the things that stop
`rl run` from working at all; warnings limit what it can do (no subordinate ids, no cgroup
limits, no network helper). rl's own error hints name the check: "see 'rl doctor userns'".

Checks read the host through a `Host` (environment, sysctl root, paths), so tests point them
at fixture files and a PATH without helpers instead of changing the machine.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from rootless.paths import Paths

OK, WARNING, FAILURE = "ok", "warning", "failure"


class Check:
    """The answer to one question about the host."""

    __slots__ = ("id", "title", "status", "found", "fix")

    def __init__(self, id: str, title: str, status: str, found: str, fix: str = "") -> None:
        self.id, self.title, self.status, self.found, self.fix = id, title, status, found, fix

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "title": self.title, "status": self.status, "found": self.found,
                "fix": self.fix}

    def __repr__(self) -> str:
        return f"Check({self.id!r}, {self.status!r}, {self.found!r})"


class Host:
    """What the checks look at: the user, their environment and where the sysctls live."""

    __slots__ = ("env", "uid", "gid", "user", "paths", "sysctl_root", "proc_root")

    def __init__(self, env: dict[str, str] | None = None, paths: Paths | None = None,
                 sysctl_root: str | None = None, proc_root: str = "/proc") -> None:
        import idmap
        from rootless.paths import Paths

        self.env = dict(os.environ) if env is None else env
        self.uid, self.gid, self.user = idmap.current_user()
        if paths is None:
            from rootless.config import configured_paths
            from rootless.errors import ConfigError

            paths = Paths.from_env(self.env)
            try:
                paths = configured_paths(paths, self.env)
            except ConfigError:
                pass  # `rl config show` reports it; the host checks still run
        self.paths = paths
        # RL_SYSCTL_ROOT points the sysctl checks at a fixture tree (tests; hosts where a
        # value cannot be changed to show what rl would say).
        self.sysctl_root = sysctl_root or self.env.get("RL_SYSCTL_ROOT") or f"{proc_root}/sys"
        self.proc_root = proc_root

    def sysctl(self, name: str) -> str | None:
        """`net.ipv4.ping_group_range` -> its value, or None when the kernel lacks it."""
        try:
            with open(os.path.join(self.sysctl_root, *name.split(".")), encoding="ascii") as f:
                return f.read().strip()
        except (FileNotFoundError, NotADirectoryError):
            # ENOENT: this kernel has no such sysctl (or a fixture tree lacks it). Any other
            # errno reaches run_checks, which reports it as the check's finding.
            return None

    def which(self, name: str) -> str | None:
        import shutil

        return shutil.which(name, path=self.env.get("PATH", os.defpath))


def all_checks() -> list[tuple[str, Callable[[Host], list[Check]]]]:
    """(id, function) in the order they are shown; each function may return several Checks."""
    from rootless.doctor import cgroup, ids, kernel, network, probe, session

    return [
        ("kernel", kernel.check_kernel),
        ("userns-sysctl", kernel.check_userns_sysctls),
        ("userns", probe.check_userns),          # also overlay and namespaces
        ("subids", ids.check_subids),
        ("uidmap", ids.check_helpers),           # also uidmap-works
        ("cgroups", cgroup.check_cgroups),       # also delegation
        ("user-session", session.check_user_session),
        ("runtime-dir", session.check_runtime_dir),
        ("storage", session.check_storage),
        ("network", network.check_network_helpers),
        ("tun", network.check_tun),
        ("fuse", network.check_fuse),
        ("ports", network.check_port_sysctls),   # also ping
    ]


CHECK_IDS = ["kernel", "userns-sysctl", "userns", "overlay", "namespaces", "subids", "uidmap",
             "uidmap-works", "cgroups", "delegation", "user-session", "runtime-dir", "storage",
             "network", "tun", "fuse", "ports", "ping"]


# Groups whose function answers more than one question.
_MORE = {"userns": ("overlay", "namespaces"), "uidmap": ("uidmap-works",),
         "cgroups": ("delegation",), "ports": ("ping",)}


def run_checks(host: Host, only: list[str] | None = None) -> list[Check]:
    """Every check (or those whose id is in `only`), in display order."""
    out: list[Check] = []
    for _group, fn in all_checks():
        if only and not set(only) & {_group, *_MORE.get(_group, ())}:
            continue
        try:
            results = fn(host)
        except OSError as exc:
            # A file the check reads is unusable: that is the finding. A warning, since the
            # check could not tell whether rl can run (its own failures are failures).
            from rootless.errors import describe_oserror

            what = str(exc.filename) if exc.filename else "a system call"
            results = [Check(_group, _group, WARNING,
                             describe_oserror(f"the check could not use {what}", exc),
                             f"check {what} and its permissions" if exc.filename
                             else "report this as a bug in rl")]
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            results = [Check(_group, _group, FAILURE, f"the check itself failed: {exc!r}",
                             "report this as a bug in rl")]
        out.extend(results)
    if only:
        out = [c for c in out if c.id in only]
    return out


def can_run(checks: list[Check]) -> bool:
    return not any(c.status == FAILURE for c in checks)


def as_json(checks: list[Check]) -> dict[str, Any]:
    return {"can_run_containers": can_run(checks), "checks": [c.as_dict() for c in checks]}


def format_text(checks: list[Check], colour: bool = False) -> str:
    """One line per check, then its fix indented below when it is not ok."""
    colours = {OK: "\033[32m", WARNING: "\033[33m", FAILURE: "\033[31m"}
    lines = []
    for c in checks:
        mark = f"{c.status:<8}"
        if colour:
            mark = f"{colours[c.status]}{mark}\033[0m"
        lines.append(f"{mark} {c.id:<14} {c.found}")
        if c.fix and c.status != OK:
            for i, fix_line in enumerate(c.fix.splitlines()):
                lines.append(f"{'':<24}{'fix: ' if i == 0 else '     '}{fix_line}")
    verdict = ("rl can run containers here." if can_run(checks)
               else "rl cannot run containers here until the failures above are fixed.")
    warnings = sum(c.status == WARNING for c in checks)
    if warnings:
        verdict += f" {warnings} warning(s) limit what it can do."
    return "\n".join(lines + ["", verdict]) + "\n"
