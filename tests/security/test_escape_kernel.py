"""Escape attempts through the kernel's syscall surface: seccomp, capabilities, no_new_privs.

Each test names the attack and asserts the precise refusal (the probe prints the errno name).
Where the kernel alone might refuse too, the same call is repeated under the default profile
with its default errno changed to EOPNOTSUPP ("marked"): that errno can only come from the
profile, so the test cannot pass by accident.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from rootless.security.caps import DEFAULT_CAPS, mask_of
from tests.security.conftest import status_field

pytestmark = pytest.mark.integration

DEFAULT_MASK = mask_of(DEFAULT_CAPS)

# Creating a user namespace is allowed, as podman allows it: test_nested_userns.py.
DENIED = ["keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
          "kexec_load", "open_by_handle_at"]


@pytest.mark.parametrize("call", DENIED)
def test_attack_kernel_interface_syscall_is_denied_by_the_default_profile(run_sec, marked_profile, call):
    r = run_sec("probe", call)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"SAFE {call} errno=EPERM"
    marked = run_sec("probe", call, opts=["--security-opt", f"seccomp={marked_profile}"])
    assert marked.stdout.strip() == f"SAFE {call} errno=EOPNOTSUPP", marked.stderr


def test_keyctl_works_without_seccomp_so_the_denial_above_is_seccomps(run_sec):
    # The session keyring is reachable from a user namespace: only the filter stops it.
    r = run_sec("probe", "keyctl", opts=["--security-opt", "seccomp=unconfined"])
    assert r.stdout.startswith("RISK keyctl rc="), r.stdout + r.stderr


def test_attack_audit_netlink_socket_is_refused_with_einval(run_sec):
    r = run_sec("probe", "socket_audit")
    assert r.stdout.strip() == "SAFE socket_audit errno=EINVAL"


def test_seccomp_filter_is_on_by_default_and_off_when_unconfined_or_privileged(run_sec):
    assert status_field(run_sec("probe", "ids").stdout, "Seccomp") == "2"
    r = run_sec("probe", "ids", opts=["--security-opt", "seccomp=unconfined"])
    assert status_field(r.stdout, "Seccomp") == "0"
    assert status_field(run_sec("probe", "ids", opts=["--privileged"]).stdout, "Seccomp") == "0"


def test_a_missing_seccomp_profile_is_an_error_125(run_sec, tmp_path):
    r = run_sec("true", opts=["--security-opt", f"seccomp={tmp_path}/nope.json"])
    assert r.returncode == 125
    assert "opening seccomp profile" in r.stderr and "No such file" in r.stderr


def test_a_profile_that_is_not_json_is_an_error_125(run_sec, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run_sec("true", opts=["--security-opt", f"seccomp={bad}"])
    assert r.returncode == 125 and "not valid JSON" in r.stderr


def test_root_gets_podmans_eleven_capabilities_and_no_ambient(run_sec):
    out = run_sec("probe", "ids").stdout
    for field in ("CapBnd", "CapEff", "CapPrm"):
        assert int(status_field(out, field), 16) == DEFAULT_MASK, (field, out)
    assert int(status_field(out, "CapAmb"), 16) == 0
    assert int(status_field(out, "CapInh"), 16) == 0


def test_non_root_user_has_no_effective_capabilities(run_sec, subuids):
    out = run_sec("probe", "ids", opts=["--user", "1000"]).stdout
    assert "euid=1000" in out
    assert int(status_field(out, "CapEff"), 16) == 0
    assert int(status_field(out, "CapPrm"), 16) == 0
    assert int(status_field(out, "CapBnd"), 16) == DEFAULT_MASK


def test_attack_raise_a_capability_dropped_with_cap_drop(run_sec):
    r = run_sec("sh", "-c", "touch /tmp/f; chown 1:1 /tmp/f; probe capset_raise 0; probe ids",
                opts=["--cap-drop", "chown"])
    assert "chown: /tmp/f: Operation not permitted" in r.stderr
    assert "SAFE capset_raise errno=EPERM" in r.stdout
    assert int(status_field(r.stdout, "CapBnd"), 16) == DEFAULT_MASK & ~1


def test_attack_raise_cap_sys_admin_that_was_never_granted(run_sec):
    assert run_sec("probe", "capset_raise", "21").stdout.strip() == "SAFE capset_raise errno=EPERM"


@pytest.fixture
def setuid_probe(fresh_rootfs):
    # Owned by the test user, which is root inside the container: a setuid-root binary.
    path = fresh_rootfs / "bin" / "suid-probe"
    path.write_bytes((fresh_rootfs / "bin" / "probe").read_bytes())
    os.chmod(path, 0o4755)
    return fresh_rootfs


def test_attack_setuid_binary_cannot_regain_a_dropped_capability(run_sec, setuid_probe, subuids):
    r = run_sec("suid-probe", "ids", opts=["--user", "1000", "--cap-drop", "CHOWN"],
                rootfs=setuid_probe)
    assert "euid=0" in r.stdout, r.stdout + r.stderr  # the setuid bit works without nnp...
    eff = int(status_field(r.stdout, "CapEff"), 16)
    assert eff == DEFAULT_MASK & ~1  # ...but only up to the bounding set: no CHOWN


def test_attack_setuid_binary_under_no_new_privileges_stays_unprivileged(run_sec, setuid_probe, subuids):
    r = run_sec("suid-probe", "ids", opts=["--user", "1000", "--security-opt", "no-new-privileges"],
                rootfs=setuid_probe)
    assert "euid=1000" in r.stdout, r.stdout + r.stderr
    assert int(status_field(r.stdout, "CapEff"), 16) == 0
    assert status_field(r.stdout, "NoNewPrivs") == "1"


def test_cap_add_names_with_and_without_prefix_and_all(run_sec):
    out = run_sec("probe", "ids", opts=["--cap-add", "CAP_NET_RAW", "--cap-add", "sys_ptrace"]).stdout
    assert int(status_field(out, "CapEff"), 16) == DEFAULT_MASK | 1 << 13 | 1 << 19
    out = run_sec("probe", "ids", opts=["--cap-drop", "ALL", "--cap-add", "KILL"]).stdout
    assert int(status_field(out, "CapBnd"), 16) == 1 << 5


@pytest.mark.parametrize("flag", ["--cap-add", "--cap-drop"])
def test_unknown_capability_is_a_usage_error_125(run_sec, flag):
    r = run_sec("true", opts=[flag, "CAP_NOPE"])
    assert r.returncode == 125
    assert "unknown capability 'CAP_NOPE'" in r.stderr


def test_privileged_has_every_capability_of_the_namespace_and_stays_rootless(run_sec):
    out = run_sec("sh", "-c", "probe ids; cat /proc/self/uid_map", opts=["--privileged"]).stdout
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    assert int(status_field(out, "CapEff"), 16) == (1 << (last + 1)) - 1
    assert f"0 {os.getuid()} 1" in " ".join(out.split())


def test_attack_leak_an_fd_from_rl_into_the_container(rl, sec_rootfs, tmp_path):
    secret = tmp_path / "host-file"
    secret.write_text("host data\n")
    cmd = (f'exec 5<"{secret}" 7<"{secret}"; exec "{rl.exe}" run --rm --network none '
           f'--rootfs "{sec_rootfs}" probe fds')
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=rl.env, timeout=60)
    assert r.stdout.strip() == "fds: 0 1 2", r.stdout + r.stderr


def test_preserve_fds_passes_exactly_the_fds_asked_for(rl, sec_rootfs, tmp_path):
    data = tmp_path / "passed"
    data.write_text("passed-through\n")
    cmd = (f'exec 3<"{data}" 4<"{data}"; exec "{rl.exe}" run --rm --network none --preserve-fds 1 '
           f'--rootfs "{sec_rootfs}" sh -c "probe fds; cat <&3"')
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=rl.env, timeout=60)
    assert r.stdout.splitlines() == ["fds: 0 1 2 3", "passed-through"], r.stdout + r.stderr


def test_preserve_fds_naming_a_closed_fd_is_an_error_125(run_sec):
    r = run_sec("true", opts=["--preserve-fds", "40"])
    assert r.returncode == 125 and "file descriptor 3" in r.stderr
