"""`rl build` without typer: the command line parsed here, as podman's pflag parses it, and
the build started. Importing typer costs 60-150 ms, and a fully cached rebuild (the common
case in a CI job) should cost little more than reading the cache; rootless.main sends
`rl build` and `rl image build` here, and anything this parser does not take (--help, an
unknown flag) to the typer command in build_cmds, which shares build_cmd() below.

pflag's rules, which typer does not have: a bool flag never takes the next word as its value
(`--layers false` is --layers=true and a positional "false"); `--pull` alone means true.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rootless.errors import UsageError

# option → (key in build_cmd's options, kind): value, list, flag (bool without value), bool
# (`--x` or `--x=BOOL`), pull (`--pull` or `--pull=POLICY`)
FLAGS: dict[str, tuple[str, str]] = {
    "--file": ("file", "value"), "-f": ("file", "value"),
    "--tag": ("tags", "list"), "-t": ("tags", "list"),
    "--build-arg": ("build_args", "list"),
    "--target": ("target", "value"),
    "--no-cache": ("no_cache", "flag"),
    "--pull": ("pull", "pull"),
    "--network": ("network", "value"),
    "--secret": ("secrets", "list"),
    "--label": ("labels", "list"),
    "--annotation": ("annotations", "list"),
    "--layers": ("layers", "bool"),
    "--squash": ("squash", "flag"),
    "--quiet": ("quiet", "flag"), "-q": ("quiet", "flag"),
    "--iidfile": ("iidfile", "value"),
    "--platform": ("platform", "value"),
    "--compression-format": ("compression", "value"),
    "--timestamp": ("timestamp", "value"),
    "--tls-verify": ("tls_verify", "bool"),
    "--format": ("format", "value"),
}
DEFAULTS: dict[str, Any] = {
    "file": None, "tags": [], "build_args": [], "target": None, "no_cache": False,
    "pull": "missing", "network": None, "secrets": [], "labels": [], "annotations": [],
    "layers": "true", "squash": False, "quiet": False, "iidfile": None, "platform": None,
    "compression": None, "timestamp": None, "tls_verify": None, "format": "oci",
}
PULL_VALUES = ("missing", "always", "never", "newer", "true", "false")


def parse_build_argv(argv: list[str]) -> tuple[str | None, dict[str, Any]] | None:
    """(context, raw options) of `rl build ARGS`, or None for the typer command to handle."""
    raw: dict[str, Any] = {k: list(v) if isinstance(v, list) else v for k, v in DEFAULTS.items()}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional += argv[i + 1:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            i += 1
            continue
        name, eq, attached = arg.partition("=")
        spec = FLAGS.get(name)
        if spec is None:
            return None  # --help, unknown or bundled flags: typer says what is wrong
        key, kind = spec
        if kind == "flag":
            if eq:
                return None
            raw[key] = True
        elif kind == "bool":
            raw[key] = attached if eq else "true"
        elif kind == "pull":
            raw[key] = attached if eq else "true"
        else:
            if eq:
                value = attached
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                return None
            if kind == "list":
                raw[key].append(value)
            else:
                raw[key] = value
        i += 1
    if len(positional) > 1:
        return None
    return (positional[0] if positional else None), raw


def build_options(raw: dict[str, Any], log_level: str) -> dict[str, Any]:
    """Raw option values (strings, as typed) → build_cmd's options, checked."""
    pull = raw["pull"]
    if pull not in PULL_VALUES:
        raise UsageError(f"invalid --pull {pull!r}", "use missing, always, never or newer")
    # podman 4: --pull (=true) pulls always; --pull=false is the default, missing
    pull = {"true": "always", "false": "missing"}.get(pull, pull)
    timestamp = raw["timestamp"]
    if isinstance(timestamp, str):
        if not timestamp.isdigit():
            raise UsageError(f"invalid --timestamp {timestamp!r}", "seconds since the epoch")
        timestamp = int(timestamp)
    tls = raw["tls_verify"]
    return {
        "file": raw["file"], "tags": list(raw["tags"]), "build_args": list(raw["build_args"]),
        "target": raw["target"], "no_cache": bool(raw["no_cache"]), "pull": pull,
        "network": raw["network"], "secrets": list(raw["secrets"]),
        "labels": list(raw["labels"]), "annotations": list(raw["annotations"]),
        "layers": parse_bool("--layers", raw["layers"]), "squash": bool(raw["squash"]),
        "quiet": bool(raw["quiet"]), "iidfile": raw["iidfile"], "platform": raw["platform"],
        "compression": raw["compression"] or "gzip",
        "compression_given": raw["compression"] is not None, "timestamp": timestamp,
        "tls_verify": None if tls is None else parse_bool("--tls-verify", tls),
        "log_level": log_level,
    }


def parse_bool(flag: str, value: str | bool) -> bool:
    """podman's bool values and message (rootless.runopts, which `rl run` parses with)."""
    from rootless.runopts import _parse_bool

    return value if isinstance(value, bool) else _parse_bool(flag, value)


def build_fast(argv: list[str]) -> int | None:
    """`rl build ARGS` without typer; None when the typer command must take it."""
    from rootless.errors import RlError
    from rootless.main import report

    parsed = parse_build_argv(argv)
    if parsed is None:
        return None
    context, raw = parsed
    try:
        image_id = build_cmd(context, build_options(raw, "warning"))
    except RlError as exc:
        return report(exc)
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        return 130
    sys.stdout.write(image_id + "\n")
    return 0


# -- the build, for both front ends -----------------------------------------------------------
def _key_values(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid {flag} {item!r}: expected KEY=VALUE")
        out[key] = value if eq else ""
    return out


def _secrets(items: list[str]) -> dict[str, str]:
    """--secret id=ID,src=PATH (podman's form; env= is not supported)."""
    out = {}
    for item in items:
        fields = dict(p.partition("=")[::2] for p in item.split(","))
        sid, src = fields.get("id"), fields.get("src") or fields.get("source")
        if not sid or not src:
            raise UsageError(f"invalid --secret {item!r}", "use --secret id=ID,src=PATH")
        out[sid] = src
    return out


def containerfile_for(context: str | None, file: str | None) -> tuple[str, str]:
    """(text, name shown in messages) of -f FILE, -f -, or CONTEXT/Containerfile|Dockerfile."""
    if file == "-" or (file is None and context is None):
        return sys.stdin.read(), "<stdin>"
    if file is None:
        assert context is not None
        for name in ("Containerfile", "Dockerfile"):
            if os.path.isfile(os.path.join(context, name)):
                file = os.path.join(context, name)
                break
        else:
            raise UsageError(f"no Containerfile or Dockerfile in {context}",
                             "give one with -f FILE")
    elif not os.path.isabs(file) and not os.path.exists(file) and context is not None:
        if os.path.exists(os.path.join(context, file)):
            file = os.path.join(context, file)
    try:
        with open(file, encoding="utf-8") as f:
            return f.read(), os.path.basename(file) if file else "Containerfile"
    except OSError as exc:
        raise UsageError(f"reading {file}: {exc.strerror}") from None


def build_cmd(context: str | None, opts: dict[str, Any]) -> str:
    """Build; returns the image ID (hex)."""
    from rootless.build.builder import Builder, BuildOptions
    from rootless.paths import Paths

    if context is not None and context != "-" and not os.path.isdir(context):
        raise UsageError(f"build context {context!r} is not a directory")
    ctx = None if context in (None, "-") else os.path.abspath(context)
    text, name = containerfile_for(ctx, opts["file"] if context != "-" else (opts["file"] or "-"))
    build_opts = BuildOptions(
        containerfile=text, containerfile_name=name, context=ctx, tags=opts["tags"],
        build_args=opts["build_args"], target=opts["target"], no_cache=opts["no_cache"],
        pull=opts["pull"], network=opts["network"], secrets=_secrets(opts["secrets"]),
        labels=_key_values(opts["labels"], "--label"),
        annotations=_key_values(opts["annotations"], "--annotation"),
        layers=opts["layers"], squash=opts["squash"], quiet=opts["quiet"],
        platform=opts["platform"], compression=opts["compression"],
        compression_given=opts.get("compression_given", False),
        timestamp=opts["timestamp"], tls_verify=opts["tls_verify"], log_level=opts["log_level"],
        environ=dict(os.environ),
    )
    if build_opts.compression not in ("gzip", "zstd"):
        raise UsageError(f"--compression-format {build_opts.compression!r}",
                         "use gzip or zstd")
    image = Builder(build_opts, Paths.from_env()).build()
    image_id: str = image.id.split(":", 1)[-1]
    if opts["iidfile"]:
        with open(opts["iidfile"], "w") as f:
            f.write(image.id)
    return image_id
