"""config.json honoured, as an unprivileged user: each test runs a container whose command
prints what it sees, through the real rl-oci."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.oci.conftest import cid

pytestmark = pytest.mark.integration


def run(oci, bundle_dir):
    r = oci("run", "--bundle", str(bundle_dir), cid())
    assert r.returncode == 0, r.stderr
    return r.stdout


def status_field(text: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith(name + ":"))


def test_process_fields(oci, bundle):
    def fields(config):
        config["hostname"] = "box"
        config["domainname"] = "example.org"
        p = config["process"]
        p["env"] = ["PATH=/bin:/usr/bin", "GREETING=hi there"]
        p["cwd"] = "/tmp"
        p["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 7], "umask": 0o027}
        p["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]
        p["oomScoreAdj"] = 500
        p["noNewPrivileges"] = True

    script = ("hostname; cat /proc/sys/kernel/domainname; echo \"$GREETING\"; pwd; id -u; id -g; "
              "id -G; umask; ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj; "
              "grep NoNewPrivs /proc/self/status")
    out = run(oci, bundle(["sh", "-c", script], fields)).splitlines()
    assert out == ["box", "example.org", "hi there", "/tmp", "1000", "1000", "1000 5 7", "0027",
                   "100", "200", "500", "NoNewPrivs:\t1"]


def test_capability_sets(oci, bundle):
    def caps(config):
        config["process"]["user"] = {"uid": 1000, "gid": 1000}
        config["process"]["capabilities"] = {
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL", "CAP_NET_RAW"],
            "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"],
        }

    out = run(oci, bundle(["cat", "/proc/self/status"], caps))
    # After execve a non-root process keeps what is ambient: permitted = effective = ambient.
    chown, kill, net_raw = 1 << 0, 1 << 5, 1 << 13
    assert int(status_field(out, "CapBnd"), 16) == chown | kill | net_raw
    assert int(status_field(out, "CapAmb"), 16) == kill
    assert int(status_field(out, "CapInh"), 16) == kill
    assert int(status_field(out, "CapPrm"), 16) == kill
    assert int(status_field(out, "CapEff"), 16) == kill


def test_mounts_masks_readonly_paths_and_sysctl(oci, bundle, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "file").write_text("from the host\n")

    def mounts(config):
        config["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(host), "options": ["rbind", "ro"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
             "options": ["size=1m", "mode=700", "noexec"]},
        ]
        config["linux"]["namespaces"].append({"type": "network"})
        config["linux"]["maskedPaths"] = ["/proc/interrupts", "/data/missing"]
        config["linux"]["readonlyPaths"] = ["/proc/sys"]
        config["linux"]["sysctl"] = {"kernel.shmmax": "123456", "net.ipv4.ip_forward": "1"}

    script = ("cat /data/file; touch /data/x 2>/dev/null || echo ro; "
              "grep ' /scratch ' /proc/self/mountinfo | grep -q noexec && echo noexec; "
              "stat -c %a /scratch; wc -c < /proc/interrupts; "
              "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward; "
              "echo 1 > /proc/sys/kernel/shmmax 2>/dev/null || echo sys-ro")
    out = run(oci, bundle(["sh", "-c", script], mounts)).split()
    assert out == ["from", "the", "host", "ro", "noexec", "700", "0", "123456", "1", "sys-ro"]


def test_devices_and_default_dev(oci, bundle):
    def devices(config):
        config["linux"]["devices"] = [
            {"path": "/dev/myfifo", "type": "p", "fileMode": 0o640},
            {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5},
        ]

    script = ("stat -c '%F %a' /dev/myfifo; stat -c '%t:%T' /dev/zero /dev/null /dev/urandom; "
              "readlink /dev/ptmx; readlink /dev/fd; head -c 3 /dev/zero | wc -c")
    out = run(oci, bundle(["sh", "-c", script], devices)).splitlines()
    assert out == ["fifo 640", "1:5", "1:3", "1:9", "pts/ptmx", "/proc/self/fd", "3"]


def test_seccomp_in_oci_format(oci, bundle):
    def seccomp(config):
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 1}],
        }

    out = run(oci, bundle(["sh", "-c", "mkdir /tmp/x 2>&1; grep Seccomp: /proc/self/status"],
                          seccomp))
    assert "Operation not permitted" in out and "Seccomp:\t2" in out


def test_explicit_id_mappings(oci, bundle):
    uid, gid = os.getuid(), os.getgid()
    sub = next(line.split(":") for line in open("/etc/subuid")
               if line.split(":")[0] in (str(uid), os.environ.get("USER", "")))

    def maps(config):
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1},
                                          {"containerID": 1, "hostID": int(sub[1]), "size": 10}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        config["mounts"] = [m for m in config["mounts"] if m["type"] != "devpts"]

    lines = [line.split() for line in run(oci, bundle(["cat", "/proc/self/uid_map"], maps))
             .splitlines()]
    assert lines == [["0", str(uid), "1"], ["1", sub[1], "10"]]


def test_rootfs_propagation(oci, bundle):
    def shared(config):
        config["linux"]["rootfsPropagation"] = "shared"

    # mountinfo(5): field 5 is the mount point, then the optional fields (shared:N).
    out = run(oci, bundle(["awk", '$5 == "/" { print $7 }', "/proc/self/mountinfo"], shared))
    assert out.startswith("shared:"), out


def test_join_namespaces_by_path_user_first(oci, bundle):
    """A second container joins the first one's user and network namespaces by path (what a
    pod does); the network namespace is owned by that user namespace, so the user namespace
    must be entered first."""
    first = cid()
    netns = bundle(["sleep", "30"], lambda c: c["linux"]["namespaces"].append({"type": "network"}))
    assert oci("run", "-d", "--bundle", str(netns), first).returncode == 0
    pid = oci.state(first)["pid"]

    def join(config):
        config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                         if ns["type"] != "user"]
        config["linux"]["namespaces"] += [{"type": "user", "path": f"/proc/{pid}/ns/user"},
                                          {"type": "network", "path": f"/proc/{pid}/ns/net"}]

    out = run(oci, bundle(["sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/user"],
                          join))
    assert out.split() == [os.readlink(f"/proc/{pid}/ns/net"), os.readlink(f"/proc/{pid}/ns/user")]


def test_hooks_in_order_with_the_state_on_stdin(oci, bundle, tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()
    log = out / "log"

    def hook(stage: str, inside: bool = False) -> dict:
        target = "/out/log" if inside else str(log)
        sh = "/bin/sh" if not inside else "/bin/sh"
        return {"path": sh, "args": ["sh", "-c", f"read -r s; echo \"{stage} $s\" >> {target}"]}

    def hooks(config):
        config["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                                 "options": ["bind"]})
        config["hooks"] = {
            "prestart": [hook("prestart")],
            "createRuntime": [hook("createRuntime")],
            "createContainer": [hook("createContainer")],
            "startContainer": [hook("startContainer", inside=True)],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        }

    name = cid()
    b = bundle(["true"], hooks)
    r = oci("run", "--bundle", str(b), name)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    stages = [line.split(" ", 1)[0] for line in lines]
    assert stages == ["prestart", "createRuntime", "createContainer", "startContainer",
                      "poststart", "poststop"]
    states = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in lines}
    assert all(s["id"] == name and s["bundle"] == str(b) for s in states.values())
    assert [states[k]["status"] for k in ("createRuntime", "poststart", "poststop")] == \
        ["creating", "running", "stopped"]
    assert states["createRuntime"]["pid"] == states["poststart"]["pid"] > 0


def test_poststart_failure_is_only_a_warning(oci, bundle):
    def failing(config):
        config["hooks"] = {"poststart": [{"path": "/bin/false"}]}

    r = oci("run", "--bundle", str(bundle(["sh", "-c", "exit 5"], failing)), cid())
    assert r.returncode == 5
    assert "warning: hooks.poststart[0] (/bin/false) failed" in r.stderr


def test_console_socket_receives_the_terminal(oci, bundle, tmp_path):
    """--console-socket: the pty master comes over the socket with SCM_RIGHTS, as conmon and
    Slurm receive it; the container's stdio are the pty."""
    import array
    import socket

    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    name = cid()
    b = bundle(["sh", "-c", "tty; stty size; echo ready; read line; echo got:$line"],
               terminal=True, consoleSize={"height": 30, "width": 100})
    r = oci("create", "--bundle", str(b), "--console-socket", path, name)
    assert r.returncode == 0, r.stderr
    conn, _ = server.accept()
    fds = array.array("i")
    _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
    fds.frombytes(ancdata[0][2][:fds.itemsize])
    master = fds[0]
    assert oci("start", name).returncode == 0
    buf = b""
    while b"ready" not in buf:
        buf += os.read(master, 4096)
    os.write(master, b"hello\n")
    while b"got:hello" not in buf:
        chunk = os.read(master, 4096)
        if not chunk:
            break
        buf += chunk
    text = buf.decode()
    assert "/dev/pts/0" in text and "30 100" in text and "got:hello" in text
    os.close(master)
    oci.wait_status(name, "stopped")
    assert oci("delete", name).returncode == 0


def test_exec_with_a_process_file_and_a_pid_file(oci, bundle, tmp_path):
    name = cid()
    b = bundle(["sleep", "30"], lambda c: c["process"].update(env=["PATH=/bin", "A=1"]))
    assert oci("run", "-d", "--bundle", str(b), name).returncode == 0
    process = {"args": ["sh", "-c", "echo $A $B $(id -u); pwd; exit 6"], "env": ["PATH=/bin", "B=2"],
               "cwd": "/tmp", "user": {"uid": 1000, "gid": 1000}}
    (tmp_path / "process.json").write_text(json.dumps(process))
    r = oci("exec", "--process", str(tmp_path / "process.json"), name)
    assert (r.returncode, r.stdout) == (6, "2 1000\n/tmp\n")
    r = oci("exec", "--env", "B=3", "--cwd", "/dev", name, "sh", "-c", "echo $A $B; pwd")
    assert (r.returncode, r.stdout) == (0, "1 3\n/dev\n")
    pid_file = tmp_path / "exec.pid"
    r = oci("exec", "-d", "--pid-file", str(pid_file), name, "sleep", "20")
    assert r.returncode == 0, r.stderr
    pid = int(pid_file.read_text())
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{oci.state(name)['pid']}/ns/pid")
    subprocess.run(["kill", str(pid)], check=True)
