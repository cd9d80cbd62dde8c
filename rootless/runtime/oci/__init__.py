"""rl as an OCI runtime: a bundle's config.json becomes the same plan `rl run` builds
(rootless.runtime.launcher.Prepared) and goes through the same launcher, helper and PID 1.

    config   read and check config.json; every error names the field
    plan     config -> Prepared (ids, namespaces, mounts, security, cgroup, PID 1's set-up)
    hooks    the runtime-spec hooks, with the state on stdin and a timeout
    state    the runtime's state directory (--root): the claim, the records, the status
    lifecycle  create, start, run, state, kill, delete, ps, exec, pause, resume, update

The command line (runc's) is rootless/ocimain.py; docs/oci-runtime.md says what is honoured.
"""
