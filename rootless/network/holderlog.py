"""The log of an rl network's long-lived processes (the holder and its bridge process): their
stderr is the network's holder.log. An error they survive (a DNS query that fails, a member
whose namespace went first) gets a line there instead of vanishing."""

from __future__ import annotations

import sys


def note(who: str, step: str, exc: BaseException) -> None:
    from rootless.errors import describe_oserror

    said = describe_oserror(step, exc) if isinstance(exc, OSError) else f"{step}: {exc}"
    sys.stderr.write(f"rl:[{who}] {said}\n")
    sys.stderr.flush()
