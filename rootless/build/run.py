"""RUN: a launch of the stage's layers on rl's own launcher, with the working tree's upper
directory kept as the changes (rootless.runtime.launcher.prepare(..., record=False)), so a
build step gets the same user namespace, network modes, seccomp and capabilities as `rl run`.

    shell form      SHELL (default ["/bin/sh", "-c"]) + [the command]
    exec form       the JSON array as it is
    RUN <<EOF       the heredoc is the script: SHELL + [its text]; a `#!` script is bind-
                    mounted at /dev/pipes/NAME and executed itself (as BuildKit does)
    RUN cmd <<EOF   the whole text, heredocs included, goes to the shell, which feeds them

    --mount=type=cache,target=T[,id=I]     a directory kept between builds (data/build-mounts)
    --mount=type=secret,id=I[,target=T]    the file of --secret id=I,src=PATH, read-only,
                                           at /run/secrets/I by default; never in a layer
    --mount=type=bind,target=T[,source=S][,from=STAGE|IMAGE][,rw]   the context, or S in a
                                           stage's or image's tree: an overlay of the layer
                                           directories that hold S (overlay_sources); with
                                           rw, writes go to a scratch upper and are dropped
    --mount=type=tmpfs,target=T            a tmpfs
    --network=none|host|default            this step's network (else the build's --network)
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from rootless.build.errors import BuildError
from rootless.build.parser import Instruction

_SINGLE_HEREDOC = re.compile(r"<<-?\s*([\"']?)([A-Za-z0-9_][A-Za-z0-9_.\-]*)\1")


@dataclass
class RunMount:
    kind: str
    target: str
    source: str | None = None
    from_ref: str | None = None
    readonly: bool = True
    cache_id: str | None = None
    required: bool = False


@dataclass
class RunPlan:
    command: list[str]
    mounts: list[RunMount] = field(default_factory=list)
    network: str | None = None
    script: tuple[str, str] | None = None  # (heredoc name, text) executed as a file


def run_command(ins: Instruction, shell: list[str]) -> tuple[list[str], tuple[str, str] | None]:
    """The argv of a RUN (and a heredoc script to mount, for `RUN <<EOF` with a `#!`)."""
    if ins.json is not None:
        if not ins.json:
            raise ins.error("RUN needs a command")
        return list(ins.json), None
    if ins.heredocs:
        whole = _SINGLE_HEREDOC.fullmatch(ins.args.strip())
        if whole and len(ins.heredocs) == 1:
            doc = ins.heredocs[0]
            if doc.content.startswith("#!"):
                return [f"/dev/pipes/{doc.name}"], (doc.name, doc.content)
            return [*shell, doc.content], None
        text = ins.args + "\n" + "".join(f"{h.content}{h.name}\n" for h in ins.heredocs)
        return [*shell, text], None
    if not ins.args:
        raise ins.error("RUN needs a command")
    return [*shell, ins.args], None


def parse_mounts(ins: Instruction) -> list[RunMount]:
    mounts = []
    for text in ins.flags.get("mount", []):
        fields: dict[str, str] = {}
        flags: set[str] = set()
        for part in (text or "").split(","):
            key, eq, value = part.strip().partition("=")
            if eq:
                fields[key] = value
            elif key:
                flags.add(key)
        kind = fields.get("type", "bind")
        target = fields.get("target") or fields.get("dst") or fields.get("destination")
        if kind == "secret":
            sid = fields.get("id") or (os.path.basename(target) if target else None)
            if not sid:
                raise ins.error("--mount=type=secret needs id=ID")
            mounts.append(RunMount("secret", target or f"/run/secrets/{sid}", source=sid,
                                   required=fields.get("required") == "true"
                                   or "required" in flags))
            continue
        if not target:
            raise ins.error(f"--mount={text}: target= is required")
        if kind == "cache":
            mounts.append(RunMount("cache", target, readonly="ro" in flags or "readonly" in flags,
                                   cache_id=fields.get("id") or target))
        elif kind == "bind":
            mounts.append(RunMount("bind", target, source=fields.get("source") or fields.get("src")
                                   or "/", from_ref=fields.get("from"),
                                   readonly=not ("rw" in flags or "readwrite" in flags)))
        elif kind == "tmpfs":
            mounts.append(RunMount("tmpfs", target, readonly=False))
        else:
            raise ins.error(f"--mount type {kind!r} is not supported",
                            "use cache, secret, bind or tmpfs")
    return mounts


def cache_mount_dir(data_dir: str, cache_id: str) -> str:
    name = hashlib.sha256(cache_id.encode()).hexdigest()[:32]
    path = os.path.join(data_dir, "build-mounts", name)
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path


def mount_points(plan_mounts: list[RunMount], script: tuple[str, str] | None) -> list[str]:
    """Paths the launcher may have created in the upper directory as mount points: removed
    again after the step when the image did not have them and they are still empty."""
    out = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/proc", "/sys", "/dev"]
    out += [m.target for m in plan_mounts]
    return out


def launch_step(*, paths: Any, lowers: list[str], layers_dir: str, dirs: Any,
                command: list[str], env: list[str], workdir: str | None, user: str | None,
                network: str | None, volumes: list[Any], log_level: str,
                quiet_output: bool) -> int:
    """One RUN on the launcher; returns the command's exit status (125… for rl's own)."""
    from rootless.runtime.launcher import Log, launch, prepare
    from rootless.runtime.rootfs import RootfsSource
    from rootless.spec import RunSpec

    spec = RunSpec(command=command, workdir=workdir or None, user=user or None,
                   network=network, volumes=volumes, quiet=True, log_level=log_level)
    source = RootfsSource(lower_dirs=lowers, chdir=layers_dir, command=command, env=env,
                          workdir=workdir or None, user=user or None, image_name=None,
                          image_id=None, stop_signal=None, exposed_ports=[])
    log = Log(log_level)
    saved = [os.dup(0), os.dup(1)]
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        # RUN reads nothing (buildah gives it /dev/null); with -q its output goes to stderr
        # so that stdout carries only the image ID.
        os.dup2(null, 0)
        if quiet_output:
            os.dup2(2, 1)
        prepared = prepare(spec, paths, log, source=source, dirs=dirs, record=False)
        return launch(prepared, paths, log)
    finally:
        os.dup2(saved[0], 0)
        os.dup2(saved[1], 1)
        for fd in (*saved, null):
            os.close(fd)


def check_secret(mount: RunMount, secrets: dict[str, str], ins: Instruction) -> str | None:
    path = secrets.get(mount.source or "")
    if path is None:
        if mount.required:
            raise ins.error(f"secret {mount.source!r} is required but was not given",
                            f"rl build --secret id={mount.source},src=FILE")
        return None
    if not os.path.isfile(path):
        raise BuildError(f"--secret id={mount.source}: {path} is not a file")
    return path


def overlay_sources(layers_top_first: list[str], rel: str) -> tuple[str, list[str]] | None:
    """Where overlayfs would find `rel` (no symlinks in it: resolved in the merged view) in a
    stack of layer directories in overlay's format: ("dir", the layers' directories to merge,
    top first) or ("file", the one file that shows), or None when it does not exist.

    overlayfs's lookup, component by component (Documentation/filesystems/overlayfs.rst):
    a whiteout (0:0 character device) or a non-directory in a layer hides the name in every
    layer below; an opaque directory (user.overlay.opaque=y) hides the layers below it.
    """
    import stat

    from rootless.build.layer import is_opaque

    parts = [p for p in rel.split("/") if p]
    dirs: list[str] = []
    for layer in layers_top_first:
        hides_below = is_opaque(layer)
        path = layer
        complete = True
        for i, part in enumerate(parts):
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                complete = False
                break
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return ("dir", dirs) if dirs else None  # whited out from here down
            if not stat.S_ISDIR(st.st_mode):
                if i < len(parts) - 1:
                    return ("dir", dirs) if dirs else None
                return ("file", [path]) if not dirs else ("dir", dirs)
            hides_below = hides_below or is_opaque(path)
        if complete:
            dirs.append(path)
        if hides_below:
            break
    return ("dir", dirs) if dirs else None
