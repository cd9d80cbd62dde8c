"""Who is running rl: the ids a plan maps, and the name /etc/subuid knows them by."""

from __future__ import annotations

import os


def current_user() -> tuple[int, int, str]:
    """(uid, gid, login name); the name falls back to str(uid) when passwd has no entry."""
    import pwd

    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return uid, gid, name
