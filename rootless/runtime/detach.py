"""`rl run -d` and `rl start`: plan in the foreground (so a bad flag, a taken name or a missing
image is reported here with 125), then hand the container to a monitor (rootless.runtime.monitor)
and print its id once the command runs."""

from __future__ import annotations

import os
import sys
from typing import Any

from rootless.errors import RlError, UsageError


def check_lifecycle_options(spec: Any) -> tuple[int | None, Any]:
    """--log-opt and --restart, validated before anything exists."""
    from rootless.runtime.logs import parse_log_opts
    from rootless.runtime.monitor import parse_restart

    cap = parse_log_opts(list(spec.log_opts or []))
    policy = parse_restart(spec.restart)
    if spec.remove and policy.mode != "no":
        raise UsageError('the --rm option conflicts with --restart, when the restartPolicy is '
                         'not "" and "no"')
    return cap, policy


def run_detached(spec: Any, paths: Any) -> int:
    from rootless.runtime.launcher import Log, prepare
    from rootless.runtime.monitor import spawn_monitor

    cap, policy = check_lifecycle_options(spec)
    log = Log(spec.log_level)
    # prepare() leaves the stopping signals blocked: spawn_monitor relays them to the monitor.
    prepared: Any = prepare(spec, paths, log)
    spawn_monitor(prepared, paths, log, cap, policy)
    sys.stdout.write(prepared.cid + "\n")
    sys.stdout.flush()
    return 0


def spec_from_config(config: dict[str, Any]) -> Any:
    """The RunSpec a container was created with (config.json "spec"), for `rl start`."""
    from rootless.spec import Limits, RunSpec, Volume

    data = dict(config.get("spec") or {})
    if not data:
        raise UsageError(f"container {config.get('id', '')[:12]} has no stored run spec "
                         "(created by an older rl): remove it and run it again")
    data["volumes"] = [Volume(**v) for v in data.get("volumes") or []]
    if isinstance(data.get("limits"), dict):
        data["limits"] = Limits(**data["limits"])
    data["env"] = [tuple(e) for e in data.get("env") or []]
    data["cidfile"] = None  # written once, at creation
    return RunSpec.from_dict(data)


def start_existing(paths: Any, cid: str, config: dict[str, Any], attach: bool = False) -> int:
    """Start a stopped container again, in its own storage: under a monitor, or in the
    foreground with `attach` (returns the exit code then)."""
    from rootless.runtime.launcher import Log, prepare, run
    from rootless.runtime.monitor import RESTARTS_FILE, STOP_MARKER
    from rootless.runtime.state import runtime_dir

    spec = spec_from_config(config)
    for name in (STOP_MARKER, RESTARTS_FILE):
        try:
            os.unlink(f"{runtime_dir(paths, cid)}/{name}")
        except FileNotFoundError:
            pass
    if attach:
        from rootless.runtime.interrupt import Interrupted, raise_on_signals

        raise_on_signals()  # as `rl run` does: a signal during set-up ends it cleanly
        try:
            return run(spec.replace(detach=False), paths, existing=cid)
        except Interrupted as exc:
            raise RlError(exc.message, exit_code=exc.exit_code) from None
    import signal

    from rootless.runtime.interrupt import STOPPING
    from rootless.runtime.monitor import spawn_monitor

    log = Log(spec.log_level)
    cap, policy = check_lifecycle_options(spec)
    # spawn_monitor relays, then holds, this process's signals: `rl start A B` gets its own
    # back for the next container (and for itself).
    saved = {sig: signal.getsignal(sig) for sig in STOPPING}
    prepared = prepare(spec, paths, log, existing=cid)
    try:
        spawn_monitor(prepared, paths, log, cap, policy)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return 0
