"""What the container may still reach of the host's kernel: capabilities, seccomp, masked and
read-only paths, no_new_privs, secrets as files.

`plan_security(spec)` runs in the launcher, before any fork: it validates the flags, reads the
secrets and compiles (or fetches from the cache) the seccomp filter, because PID 1 applies the
plan after pivot_root, when no host file or Python module is reachable any more. PID 1 then
calls, in this order (runtime/container.py run_command):

  1. apply_before_identity(lib, user)   still root with every capability of the namespace:
       write the secrets (chown needs CAP_CHOWN); drop the bounding set (PR_CAPBSET_DROP needs
       CAP_SETPCAP); clear the ambient set; keep caps across setuid when a non-root user is
       given --cap-add; load seccomp here *only* without no_new_privs: the kernel then wants
       CAP_SYS_ADMIN in the user namespace, which the capset of step 3 is about to drop (runc
       and crun do the same; the profile must allow the few calls left before execve).
  2. (run_command) setgroups/setresgid/setresuid to the container user.
  3. apply_before_exec(lib, user)       capset to the container set (root) or to the added
       set (non-root, also raised as ambient); then no_new_privs and, with it, seccomp: the
       last step, so a profile may even deny capset or prctl.
"""

from __future__ import annotations

import errno
import os
import sys

from rootless.errors import SetupError, UsageError, describe_oserror
from rootless.security import caps as capmod

TYPE_CHECKING = False  # typing costs ~2 ms of `rl run`: annotations only
if TYPE_CHECKING:
    from typing import Any

_IGNORED_OPTS = ("label=", "apparmor=", "proc-opts=")  # no LSM support: accepted, no effect


class SecurityPlan:
    """The security settings of one run, ready for PID 1 (plain data plus a BPF buffer)."""

    # `sets`: an OCI process's own capability sets as masks (bounding, effective, permitted,
    # inheritable, ambient), applied as they are whatever the user; None for `rl run`, whose
    # sets follow from `caps`/`user_caps` and the user (podman's rules, below).
    __slots__ = ("privileged", "caps", "user_caps", "last_cap", "no_new_privs", "masked",
                 "readonly", "seccomp", "seccomp_source", "secrets", "_secrets_op", "_done",
                 "sets")

    def __init__(self, **kw: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, kw.get(name))
        self._done = False

    # -- the launcher's questions --------------------------------------------------------
    def masked_paths(self) -> list[str]:
        return list(self.masked)

    def readonly_paths(self) -> list[str]:
        return list(self.readonly)

    def extra_mounts(self, dirs: Any) -> list[Any]:
        """The private tmpfs on /run/secrets (nothing on disk: `dirs` is not used)."""
        if not self.secrets:
            return []
        return [self._secrets_op]

    def describe(self) -> str:
        parts = ["privileged" if self.privileged else
                 "caps=" + (",".join(n[4:] for n in capmod.names_of(self.caps)) or "none")]
        parts.append(f"seccomp={self.seccomp_source}")
        if self.no_new_privs:
            parts.append("no-new-privileges")
        parts.append(f"masked={len(self.masked)} readonly={len(self.readonly)}")
        if self.secrets:
            parts.append("secrets=" + ",".join(t for t, _ in self.secrets))
        return " ".join(parts)

    # -- PID 1 ---------------------------------------------------------------------------
    def apply_before_identity(self, lib: Any, user: Any) -> None:
        if self.secrets:
            from rootless.security.secrets import write_into_container

            op = self._secrets_op
            write_into_container(lib, self.secrets, user.uid, user.gid, op.flags, op.data)
        if self.sets is not None:
            capmod.drop_bounding_set(lib, self.sets[0], self.last_cap)
        elif not self.privileged:
            capmod.drop_bounding_set(lib, self.caps, self.last_cap)
        capmod.clear_ambient(lib)
        if user.uid != 0 and (self.user_caps or (self.sets is not None and self.sets[2])):
            capmod.keep_caps_across_setuid(lib)
        if self.seccomp is not None and not self.no_new_privs:
            self.seccomp.install(lib)
        self._done = True

    def apply_before_exec(self, lib: Any, user: Any) -> None:
        if not self._done:
            raise SetupError("security: apply_before_identity was not called before the user switch")
        if self.sets is not None:
            _, effective, permitted, inheritable, ambient = self.sets
            lib.capset(effective, permitted, inheritable)
            capmod.raise_ambient(lib, ambient, self.last_cap)
        elif user.uid == 0:
            capmod.set_process_caps(lib, self.caps)
        else:
            # setresuid already emptied permitted/effective (unless keep-caps); what a
            # non-root user gets is the --cap-add set, as ambient so it survives execve.
            capmod.set_process_caps(lib, self.user_caps, inheritable=self.user_caps)
            capmod.raise_ambient(lib, self.user_caps, self.last_cap)
        if self.no_new_privs:
            lib.set_no_new_privs()
            if self.seccomp is not None:
                self.seccomp.install(lib)


def parse_security_opts(opts: list[str]) -> dict[str, Any]:
    """podman's --security-opt values; unknown ones are a UsageError (125)."""
    out: dict[str, Any] = {"no_new_privs": False, "seccomp": None, "mask": [], "unmask": []}
    for opt in opts:
        # docker writes key:value, podman key=value; both are accepted.
        key, sep, value = opt.partition("=")
        if not sep and ":" in opt:
            key, sep, value = opt.partition(":")
        if key == "no-new-privileges":
            if value.lower() not in ("", "true", "false", "1", "0"):
                raise UsageError(f"invalid --security-opt {opt!r}: expected true or false")
            out["no_new_privs"] = value.lower() in ("", "true", "1")
        elif key == "seccomp" and value:
            out["seccomp"] = value
        elif key == "mask" and value:
            out["mask"].append(value)
        elif key == "unmask" and value:
            out["unmask"].append(value)
        elif any(opt.startswith(p) for p in _IGNORED_OPTS) or opt == "label:disable":
            continue
        else:
            raise UsageError(f"invalid --security-opt {opt!r}",
                             hint="use no-new-privileges, seccomp=unconfined|PATH, mask=PATHS "
                                  "or unmask=ALL|PATHS")
    return out


def default_profile_path() -> str:
    """configs/seccomp.json of the source tree, or the copy an installation ships."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (
        os.path.join(here, "..", "..", "configs", "seccomp.json"),
        os.path.join(sys.prefix, "share", "rootless", "seccomp.json"),
        "/usr/share/rootless/seccomp.json",
    ):
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    return os.path.normpath(os.path.join(here, "..", "..", "configs", "seccomp.json"))


def plan_security(spec: Any, paths: Any = None, log: Any = None) -> SecurityPlan:
    """Validate the security flags of `spec` and prepare everything PID 1 will apply.
    `log`: the launcher's debug log, if any."""
    if paths is None:
        from rootless.paths import Paths

        paths = Paths.from_env()
    opts = parse_security_opts(list(spec.security_opts or []))
    last_cap = capmod.read_last_cap()
    caps, user_caps = capmod.plan_caps(list(spec.cap_add or []), list(spec.cap_drop or []),
                                       bool(spec.privileged), last_cap)
    from rootless.security.masks import plan_masks

    masked, readonly = plan_masks(opts["mask"], opts["unmask"], bool(spec.privileged))
    preserve = spec.preserve_fds or 0
    if preserve < 0:
        raise UsageError("--preserve-fds must be 0 or more")
    for fd in range(3, 3 + preserve):
        try:
            os.fstat(fd)
        except OSError:
            raise UsageError(f"--preserve-fds {preserve}: file descriptor {fd} is not open") from None
    seccomp, source = _plan_seccomp(opts["seccomp"], bool(spec.privileged), caps, last_cap, paths,
                                    log)
    secrets: list[tuple[str, bytes]] = []
    secrets_op = None
    if spec.secrets:
        from rootless.security import secrets as secmod

        secrets = secmod.load(paths.data, list(spec.secrets))
        secrets_op = secmod.tmpfs_op(secrets)
    return SecurityPlan(privileged=bool(spec.privileged), caps=caps, user_caps=user_caps,
                        last_cap=last_cap, no_new_privs=opts["no_new_privs"], masked=masked,
                        readonly=readonly, seccomp=seccomp, seccomp_source=source,
                        secrets=secrets, _secrets_op=secrets_op)


def plan_oci_security(process: dict[str, Any], linux: dict[str, Any], paths: Any,
                      log: Any = None) -> SecurityPlan:
    """The security plan of an OCI process (config.json's `process`, or an exec's): its five
    capability sets as given, noNewPrivileges, the container's seccomp profile (same format
    as podman's, compiled through the same cache), masked and read-only paths as listed."""
    last_cap = capmod.read_last_cap()
    caps = process.get("capabilities") or {}
    bounding, effective, permitted, inheritable, ambient = (
        capmod.mask_of(caps.get(kind) or []) & capmod.all_caps(last_cap)
        for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"))
    # The kernel raises an ambient capability only when it is permitted and inheritable
    # (capabilities(7)); runc ignores the others (its rootless spec lists ambient without
    # inheritable), and so does rl-oci.
    sets = (bounding, effective, permitted, inheritable, ambient & permitted & inheritable)
    seccomp, source = None, "unconfined"
    profile = linux.get("seccomp")
    if profile:
        import rootless.jsonc as json  # not json: it imports re (~3 ms of every create)
        from rootless.security.seccomp import load_filter

        # The profile's bytes are the cache key: the same JSON, sorted, gives the same key.
        data = json.dumps(profile, sort_keys=True).encode()
        try:
            seccomp = load_filter(data, "linux.seccomp", set(capmod.names_of(sets[0])),
                                  os.path.join(paths.runtime_dir, "seccomp"))
        except FileNotFoundError:
            raise SetupError("linux.seccomp cannot be applied: libseccomp is not installed",
                             hint="install libseccomp2 (apt-get install libseccomp2)") from None
        source = "linux.seccomp"
    return SecurityPlan(privileged=False, caps=sets[0], user_caps=0, last_cap=last_cap,
                        no_new_privs=bool(process.get("noNewPrivileges")),
                        masked=list(linux.get("maskedPaths") or []),
                        readonly=list(linux.get("readonlyPaths") or []), seccomp=seccomp,
                        seccomp_source=source, secrets=[], _secrets_op=None, sets=sets)


def _plan_seccomp(value: str | None, privileged: bool, caps: int, last_cap: int,
                  paths: Any, log: Any = None) -> tuple[Any, str]:
    if value == "unconfined" or (privileged and value is None):
        return None, "unconfined"
    strict = value is not None  # a profile the user named must be applied, or the run fails
    path = value if strict else default_profile_path()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        if strict:
            raise UsageError(f"opening seccomp profile {path}: {exc.strerror}") from None
        if exc.errno != errno.ENOENT:
            # Present but unreadable: never a reason to run with less confinement.
            raise SetupError(describe_oserror(f"reading the default seccomp profile {path}", exc),
                             hint="reinstall rl, or choose --security-opt seccomp=PATH") from None
        sys.stderr.write(f"rl: warning: the default seccomp profile {path} is missing: "
                         "running without seccomp\n")
        return None, "unconfined"
    from rootless.security.seccomp import load_filter

    cap_names = set(capmod.names_of(caps))
    try:
        return load_filter(data, path, cap_names, os.path.join(paths.runtime_dir, "seccomp"),
                           log=log), ("default" if not strict else path)
    except FileNotFoundError:
        if strict:
            raise SetupError(f"seccomp profile {path} cannot be applied: libseccomp is not installed",
                             hint="install libseccomp2 (apt-get install libseccomp2)") from None
        sys.stderr.write("rl: warning: libseccomp.so.2 not found: running without seccomp "
                         "(install libseccomp2)\n")
        return None, "unconfined"
