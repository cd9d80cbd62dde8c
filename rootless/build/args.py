"""ARG scoping (the Dockerfile reference, "ARG" and "Scope"):

- ARGs before the first FROM are meta args: FROM lines see them; a stage sees one only when
  it declares it again (`ARG NAME` without a value takes the meta value);
- inside a stage an ARG is in scope from its line to the end of that stage;
- --build-arg NAME=VALUE overrides a declared default; `--build-arg NAME` takes the value from
  rl's own environment (and is not set at all when the environment lacks it);
- the proxy args (HTTP_PROXY … no_proxy) reach RUN without being declared, and stay out of
  the image's history;
- the platform args (TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT, BUILDPLATFORM, …)
  are meta args with automatic values;
- ENV wins over an ARG of the same name in substitution and in RUN's environment.
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Mapping

from rootless.build.errors import BuildError

PROXY_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
         "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


def host_platform() -> tuple[str, str, str]:
    """(os, arch, variant) of this machine in OCI's names."""
    machine = _platform.machine()
    arch = _ARCH.get(machine, machine)
    variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine, "")
    return "linux", arch, variant


def platform_args(target: str | None = None) -> dict[str, str]:
    """The automatic platform ARGs; target is --platform (OS/ARCH[/VARIANT]) when given."""
    os_, arch, variant = host_platform()
    build = {"BUILDOS": os_, "BUILDARCH": arch, "BUILDVARIANT": variant,
             "BUILDPLATFORM": "/".join(p for p in (os_, arch, variant) if p)}
    if target:
        parts = target.split("/")
        os_, arch = parts[0], parts[1] if len(parts) > 1 else arch
        variant = parts[2] if len(parts) > 2 else ""
    out = dict(build)
    out.update({"TARGETOS": os_, "TARGETARCH": arch, "TARGETVARIANT": variant,
                "TARGETPLATFORM": "/".join(p for p in (os_, arch, variant) if p)})
    return out


def parse_build_args(items: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """--build-arg K=V, and bare --build-arg K from the environment (skipped when unset)."""
    out: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not name:
            raise BuildError(f"invalid --build-arg {item!r}: expected NAME=VALUE or NAME")
        if eq:
            out[name] = value
        elif name in environ:
            out[name] = environ[name]
    return out


class ArgScope:
    """The ARGs in scope at one point of one stage; `consumed` is shared by the whole build
    so unused --build-arg values can be reported at the end."""

    def __init__(self, build_args: Mapping[str, str], meta: Mapping[str, str],
                 consumed: set[str]) -> None:
        self.build_args = build_args
        self.meta = meta
        self.consumed = consumed
        self.values: dict[str, str] = {}
        self.declared: list[str] = []

    def declare(self, name: str, default: str | None) -> None:
        """`ARG name[=default]`; default is already substituted."""
        if not name or not all(c.isalnum() or c == "_" for c in name):
            raise BuildError(f"invalid ARG name {name!r}")
        if name not in self.declared:
            self.declared.append(name)
        if name in self.build_args:
            self.consumed.add(name)
            self.values[name] = self.build_args[name]
        elif default is not None:
            self.values[name] = default
        elif name in self.meta:
            self.values[name] = self.meta[name]
        else:
            self.values.pop(name, None)

    def copy(self) -> ArgScope:
        other = ArgScope(self.build_args, self.meta, self.consumed)
        other.values = dict(self.values)
        other.declared = list(self.declared)
        return other

    def run_env(self) -> dict[str, str]:
        """What RUN sees besides ENV: declared args and the undeclared proxy args."""
        out = {k: v for k, v in self.build_args.items() if k in PROXY_ARGS}
        self.consumed.update(out)
        out.update(self.values)
        return out

    def history_args(self) -> dict[str, str]:
        """The declared args a RUN records in its history (`|2 A=1 B=2 …`): proxies never."""
        return {k: v for k, v in self.values.items() if k not in PROXY_ARGS}


def substitution_env(args: ArgScope, config_env: list[str]) -> dict[str, str]:
    """The variables a stage instruction substitutes with: ARGs, then ENV over them."""
    env = dict(args.values)
    for item in config_env:
        name, _, value = item.partition("=")
        env[name] = value
    return env
