"""The commented profile `rl profile new NAME` writes, made from the `rl run` flag table so it
lists every key there is."""

from __future__ import annotations

from rootless.config.schema import RUN_KEYS
from rootless.runopts import OPTIONS

_EXAMPLES = {
    "env": '["TZ=UTC"]', "volumes": '["${PWD}:/src:ro"]', "tmpfs": '["/scratch:size=256m"]',
    "publish": '["8080:80"]', "memory": '"512m"', "pids_limit": "1024", "cpus": '"1.5"',
    "timeout": "600", "network": '"pasta"', "userns": '"keep-id"', "workdir": '"/src"',
    "user": '"1000:1000"', "cap_drop": '["ALL"]', "security_opts": '["no-new-privileges"]',
    "pull": '"missing"', "image": '"docker.io/library/alpine:latest"',
    "command": '["sh", "-c", "echo hello"]', "entrypoint": '""', "hostname": '"box"',
    "cgroups": '"enabled"', "log_level": '"info"', "stop_signal": '"SIGTERM"',
}
_BY_KIND = {"bool": "true", "int": "0", "str": '""', "list": "[]"}


def profile_template(name: str) -> str:
    lines = [
        f"# rl profile '{name}': `rl run --profile {name} ...` (or RL_PROFILE={name}).",
        "# Every key is optional; uncomment what you need. Keys are the `rl run` flags with",
        "# '_' for '-' (see `rl run --help`). Precedence, lowest first: config.toml [run] <",
        "# profiles in the order given < command-line flags. Lists add up across those",
        "# layers; `clear = [\"env\"]` here drops what earlier layers put in env.",
        "# ${NAME} is taken from the environment; ${PWD} is the current directory.",
        "",
        f'description = "what {name} is for"',
        '# extends = "base"          # apply profile base.toml first',
        '# clear = ["env"]           # start these lists afresh',
        "",
        "# what to run, when the command line does not say",
        f"# image = {_EXAMPLES['image']}",
        f"# command = {_EXAMPLES['command']}",
    ]
    for names, dest, _kind, _meta, text in OPTIONS:
        if dest not in RUN_KEYS:
            continue
        value = _EXAMPLES.get(dest, _BY_KIND[RUN_KEYS[dest]])
        lines.append(f"# {dest} = {value}".ljust(44) + f"# {names[-1]}: {text}")
    return "\n".join(lines) + "\n"
