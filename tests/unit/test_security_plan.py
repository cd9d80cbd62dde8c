"""Security planning without privileges: capability sets, masks, options, secrets, seccomp
rules and the compiled-filter cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rootless.errors import UsageError
from rootless.security import SecurityPlan, libseccomp, masks, parse_security_opts, seccomp, secrets
from rootless.security import caps as c

REPO = Path(__file__).resolve().parents[2]
LAST = 40


def test_default_caps_are_podmans_eleven():
    caps, added = c.plan_caps([], [], False, LAST)
    assert set(c.names_of(caps)) == {f"CAP_{n}" for n in c.DEFAULT_CAPS}
    assert added == 0


def test_cap_add_drop_names_and_all():
    caps, added = c.plan_caps(["net_raw,CAP_SYS_ADMIN"], ["chown"], False, LAST)
    assert caps >> 13 & 1 and caps >> 21 & 1 and not caps & 1
    assert added == (1 << 13) | (1 << 21)
    caps, _ = c.plan_caps(["KILL"], ["ALL"], False, LAST)
    assert caps == 1 << 5
    caps, _ = c.plan_caps(["ALL"], ["SYS_ADMIN"], False, LAST)
    assert caps == c.all_caps(LAST) & ~(1 << 21)
    caps, _ = c.plan_caps([], [], True, LAST)
    assert caps == c.all_caps(LAST)


@pytest.mark.parametrize("bad", ["CAP_NOPE", "", "SYS-ADMIN"])
def test_unknown_capability_is_usage_error(bad):
    with pytest.raises(UsageError) as info:
        c.plan_caps([bad or " x"], [], False, LAST)
    assert info.value.exit_code == 125


def test_cap_both_added_and_dropped_is_refused():
    with pytest.raises(UsageError, match="both added and dropped"):
        c.plan_caps(["NET_RAW"], ["net_raw"], False, LAST)


class Recorder:
    def __init__(self):
        self.calls = []

    def prctl(self, *args):
        self.calls.append(("prctl", *args))
        return 0

    def capset(self, *args):
        self.calls.append(("capset", *args))

    def set_no_new_privs(self):
        self.calls.append(("nnp",))

    def mount(self, *args):
        self.calls.append(("mount", *args))


class User:
    def __init__(self, uid):
        self.uid = self.gid = uid


class FakeFilter:
    def __init__(self, log):
        self.log = log

    def install(self, lib):
        lib.calls.append(("seccomp",))


def _plan(**kw):
    base = dict(privileged=False, caps=c.mask_of(c.DEFAULT_CAPS), user_caps=0, last_cap=LAST,
                no_new_privs=False, masked=[], readonly=[], seccomp=None, seccomp_source="x",
                secrets=[], _secrets_op=None)
    base.update(kw)
    return SecurityPlan(**base)


def test_order_with_no_new_privs_seccomp_is_the_very_last_step():
    lib = Recorder()
    plan = _plan(no_new_privs=True)
    plan.seccomp = FakeFilter(lib)
    plan.apply_before_identity(lib, User(0))
    plan.apply_before_exec(lib, User(0))
    kinds = [call[0] for call in lib.calls]
    assert kinds[-3:] == ["capset", "nnp", "seccomp"]
    dropped = [call[2] for call in lib.calls if call[:2] == ("prctl", 24)]
    assert len(dropped) == LAST + 1 - 11 and 21 in dropped and 0 not in dropped


def test_order_without_no_new_privs_loads_seccomp_while_cap_sys_admin_is_held():
    lib = Recorder()
    plan = _plan()
    plan.seccomp = FakeFilter(lib)
    plan.apply_before_identity(lib, User(0))
    kinds = [call[0] for call in lib.calls]
    assert kinds[-1] == "seccomp" and "capset" not in kinds
    plan.apply_before_exec(lib, User(0))
    assert lib.calls[-1][0] == "capset"


def test_non_root_user_gets_only_the_added_caps_as_ambient():
    lib = Recorder()
    plan = _plan(user_caps=1 << 10)
    plan.apply_before_identity(lib, User(1000))
    assert ("prctl", c.PR_SET_KEEPCAPS, 1) in lib.calls
    plan.apply_before_exec(lib, User(1000))
    assert ("capset", 1 << 10, 1 << 10, 1 << 10) in lib.calls
    assert lib.calls[-1] == ("prctl", 47, c.PR_CAP_AMBIENT_RAISE, 10)


def test_security_opts():
    opts = parse_security_opts(["no-new-privileges", "seccomp=unconfined", "mask=/a:/b",
                                "unmask=ALL", "label=disable"])
    assert opts["no_new_privs"] and opts["seccomp"] == "unconfined"
    assert opts["mask"] == ["/a:/b"] and opts["unmask"] == ["ALL"]
    assert parse_security_opts(["no-new-privileges:false"])["no_new_privs"] is False
    for bad in ["seccomp", "bogus=1", "no-new-privileges=maybe"]:
        with pytest.raises(UsageError):
            parse_security_opts([bad])


def test_masks_defaults_unmask_and_privileged():
    masked, ro = masks.plan_masks([], [], False)
    assert "/proc/kcore" in masked and "/proc/sys" in ro
    masked, ro = masks.plan_masks(["/x:/y"], ["/proc/keys:/proc/sys"], False)
    assert "/proc/keys" not in masked and "/proc/sys" not in ro and masked[-2:] == ["/x", "/y"]
    assert masks.plan_masks([], ["ALL"], False) == ([], [])
    assert masks.plan_masks([], [], True) == ([], [])
    with pytest.raises(UsageError):
        masks.plan_masks(["relative"], [], False)


def test_secret_options():
    assert secrets.parse_secret_opt("tok") == ("tok", "tok")
    assert secrets.parse_secret_opt("tok:db") == ("tok", "db")
    assert secrets.parse_secret_opt("tok,target=/run/secrets/db,type=mount") == ("tok", "db")
    for bad in ["tok,type=env", "../x", "tok:../../etc/passwd", "tok,uid=0"]:
        with pytest.raises(UsageError):
            secrets.parse_secret_opt(bad)


def test_secret_store_roundtrip(tmp_path):
    path = secrets.create(tmp_path, "tok", b"value")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert secrets.read(tmp_path, "tok") == b"value"
    assert [n for n, _, _ in secrets.listing(tmp_path)] == ["tok"]
    secrets.remove(tmp_path, "tok")
    assert secrets.listing(tmp_path) == []


def test_rule_applies_caps_arches_kernel():
    rule = {"includes": {"caps": ["CAP_SYS_ADMIN"]}}
    assert not libseccomp.rule_applies(rule, set(), "amd64", "6.1.0")
    assert libseccomp.rule_applies(rule, {"CAP_SYS_ADMIN"}, "amd64", "6.1.0")
    rule = {"excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390x"]}}
    assert libseccomp.rule_applies(rule, set(), "amd64", "6.1.0")
    assert not libseccomp.rule_applies(rule, set(), "s390x", "6.1.0")
    assert not libseccomp.rule_applies({"includes": {"minKernel": "6.2"}}, set(), "amd64", "6.1.9-amd64")
    assert libseccomp.rule_applies({"includes": {"minKernel": "4.8"}}, set(), "amd64", "6.18.0")


def test_default_profile_denies_the_dangerous_calls_and_reads_as_json():
    profile = json.loads((REPO / "configs" / "seccomp.json").read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    always = set()
    for rule in profile["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("includes", {}).get("caps"):
            always.update(rule["names"])
    for name in ["keyctl", "add_key", "request_key", "userfaultfd", "bpf", "perf_event_open",
                 "kexec_load", "open_by_handle_at", "ptrace", "sethostname", "setdomainname"]:
        assert name not in always, name
    # Nested user namespaces, as podman's profile allows them (the kernel guards the rest).
    for name in ["unshare", "clone", "clone3", "setns", "mount", "umount2", "pivot_root"]:
        assert name in always, name


def _need_libseccomp():
    try:
        return libseccomp.LibSeccomp()
    except FileNotFoundError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and libseccomp.so.2 is missing (apt-get install libseccomp2)")
        pytest.skip("libseccomp.so.2 is missing")


def test_compile_is_cached_and_the_cache_needs_no_libseccomp(tmp_path):
    _need_libseccomp()
    data = (REPO / "configs" / "seccomp.json").read_bytes()
    first = seccomp.load_filter(data, "default", {"CAP_CHOWN"}, str(tmp_path))
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and cached[0].read_bytes() == first.program
    again = seccomp.load_filter(data, "default", {"CAP_CHOWN"}, str(tmp_path),
                                libseccomp_name="libnot-there.so.9")
    assert again.program == first.program
    other = seccomp.load_filter(data, "default", {"CAP_CHOWN", "CAP_SYS_ADMIN"}, str(tmp_path))
    assert other.program != first.program and len(list(tmp_path.iterdir())) == 2


def test_bad_profiles_are_usage_errors(tmp_path):
    _need_libseccomp()
    with pytest.raises(UsageError, match="unsupported action"):
        seccomp.load_filter(b'{"defaultAction": "SCMP_ACT_NOTIFY"}', "p", set(), None)
    bad_arg = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "op": "SCMP_CMP_EQ"}]}]}
    with pytest.raises(UsageError, match="bad argument filter"):
        seccomp.load_filter(json.dumps(bad_arg).encode(), "p", set(), None)
