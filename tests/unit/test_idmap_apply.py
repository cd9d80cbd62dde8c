"""apply_mapping against the real kernel: a forked child unshares CLONE_NEWUSER and the test,
as its parent, writes the maps. (a) single id, always; (b) subordinate ids through
newuidmap/newgidmap, as a user who has them. When the session is root, (b) runs in a worker
that has dropped to RL_TEST_USER (default rltest). Under CI=true nothing may skip.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
from typing import Any

import pytest

from idmap import (
    IdMapError,
    apply_mapping,
    current_user,
    find_helpers,
    plan_mapping,
    read_subids,
)

CLONE_NEWUSER = 0x10000000  # <linux/sched.h>


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true forbids skipping: {reason}")
    pytest.skip(reason)


def run_child_in_userns(apply: Any) -> dict[str, Any]:
    """Fork a child that unshares CLONE_NEWUSER; call apply(pid) between the handshakes;
    return what the parent reads in /proc/PID and what the child sees of itself."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(ready_r)
            os.close(go_w)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWUSER) != 0:
                os.write(ready_w, f"E{os.strerror(ctypes.get_errno())}".encode())
                os._exit(1)
            os.write(ready_w, b"R")
            if os.read(go_r, 1) == b"G":
                with open("/proc/self/uid_map") as f:
                    inside_map = f.read()
                view = {"uid": os.getuid(), "gid": os.getgid(), "uid_map": inside_map}
                os.write(ready_w, json.dumps(view).encode())
        except BaseException:
            code = 2
        os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    result: dict[str, Any] = {}
    try:
        first = os.read(ready_r, 1)
        if first != b"R":
            result["unshare_error"] = (first + os.read(ready_r, 4096)).decode()[1:] or "no answer"
            return result
        try:
            apply(pid)
        except IdMapError as e:
            result["apply_error"] = f"{e} (hint: {e.hint})"
        for name in ("uid_map", "gid_map", "setgroups"):
            with open(f"/proc/{pid}/{name}") as f:
                result[name] = f.read()
        os.write(go_w, b"G")
        chunks = []
        while data := os.read(ready_r, 4096):
            chunks.append(data)
        if chunks:
            result["inside"] = json.loads(b"".join(chunks))
        return result
    finally:
        os.close(ready_r)
        os.close(go_w)
        os.waitpid(pid, 0)


def table(text: str) -> list[list[int]]:
    return [[int(n) for n in line.split()] for line in text.splitlines()]


def test_single_id_map() -> None:
    uid, gid, user = current_user()
    mapping = plan_mapping(uid=uid, gid=gid, user=user, subuids=[], subgids=[],
                           helpers_available=False)
    seen = run_child_in_userns(lambda pid: apply_mapping(pid, mapping, None))
    if "unshare_error" in seen:
        skip_or_fail(f"unshare(CLONE_NEWUSER) refused here: {seen['unshare_error']}")
    assert "apply_error" not in seen, seen.get("apply_error")
    assert table(seen["uid_map"]) == [[0, uid, 1]]
    assert table(seen["gid_map"]) == [[0, gid, 1]]
    assert seen["setgroups"].strip() == "deny"
    assert seen["inside"]["uid"] == 0 and seen["inside"]["gid"] == 0


def subid_scenario() -> dict[str, Any]:
    """Plan from the real /etc/subuid and /etc/subgid and apply through the helpers."""
    uid, gid, user = current_user()
    subuids = read_subids("/etc/subuid", user, uid)
    subgids = read_subids("/etc/subgid", user, uid)
    helpers = find_helpers()
    if not subuids or not subgids:
        return {"skip": f"user {user} has no ranges in /etc/subuid and /etc/subgid"}
    if helpers is None:
        return {"skip": "newuidmap/newgidmap not found on PATH (package uidmap)"}
    mapping = plan_mapping(uid=uid, gid=gid, user=user, subuids=subuids, subgids=subgids,
                           helpers_available=True)
    seen = run_child_in_userns(lambda pid: apply_mapping(pid, mapping, helpers))
    seen["want_uid"] = [[r.inside, r.outside, r.count] for r in mapping.uid_map]
    seen["want_gid"] = [[r.inside, r.outside, r.count] for r in mapping.gid_map]
    seen["mode"] = mapping.mode
    return seen


def subid_scenario_as(user: str) -> dict[str, Any]:
    """Run subid_scenario in a forked worker that has become `user` (the session is root)."""
    pw = pwd.getpwnam(user)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
            os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
            try:
                out = subid_scenario()
            except Exception as e:  # report, do not lose it in the worker
                out = {"error": f"{type(e).__name__}: {e}"}
            os.write(w, json.dumps(out).encode())
        except BaseException:
            code = 2
        os._exit(code)
    os.close(w)
    chunks = []
    while data := os.read(r, 65536):
        chunks.append(data)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert chunks, f"worker as {user} died with status {status}"
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result


def test_subid_map() -> None:
    if os.getuid() == 0:
        user = os.environ.get("RL_TEST_USER", "rltest")
        try:
            pwd.getpwnam(user)
        except KeyError:
            skip_or_fail(f"running as root and there is no user {user} (set RL_TEST_USER)")
        seen = subid_scenario_as(user)
    else:
        seen = subid_scenario()
    assert "error" not in seen, seen.get("error")
    if "skip" in seen:
        skip_or_fail(seen["skip"])
    if "unshare_error" in seen:
        skip_or_fail(f"unshare(CLONE_NEWUSER) refused here: {seen['unshare_error']}")
    assert "apply_error" not in seen, seen["apply_error"]
    assert seen["mode"] == "subid"
    assert len(seen["want_uid"]) >= 2
    assert table(seen["uid_map"]) == seen["want_uid"]
    assert table(seen["gid_map"]) == seen["want_gid"]
    assert seen["setgroups"].strip() == "allow"  # newgidmap leaves setgroups alone
    assert seen["inside"]["uid"] == 0 and seen["inside"]["gid"] == 0
    # The child sees its own map relative to the parent namespace: the same lines.
    assert table(seen["inside"]["uid_map"]) == seen["want_uid"]
