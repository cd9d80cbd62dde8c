"""The holder of an rl network: `rl:[netns NAME]`, a detached process of the user.

Started lazily by the first `rl run --network NAME` (under the network's lock: see
rootless.network.ipam), it lives exactly as long as the network has members and then removes
everything it made. It runs in the host's namespaces, as the user, and owns:

  - the keeper, `rl:[bridge NAME]` (rootless.network.bridge_ns): root of the network's user
    namespace N, in the bridge namespace; the holder writes N's id maps (the user's default
    mapping, as any container's) and the keeper dies with the holder (PR_SET_PDEATHSIG);
  - one slirp4netns for the whole network, attached to the bridge namespace: outbound traffic of
    every member, and the published ports of every member (its API's add_hostfwd, with the
    member's address as guest_addr);
  - the control socket $XDG_RUNTIME_DIR/rootless/networks/NAME/ctl.sock and state.json there.

Why slirp4netns and not pasta as the shared helper: the network's addresses are routed through
the bridge namespace, so the helper sees several source addresses on one tap. slirp4netns treats
each flow on its own (replies are resolved by ARP, which the bridge namespace answers by proxy);
pasta (the 2023 snapshot in Debian 12) keeps one guest address and sends every reply there.

A member is a connection on the control socket: the launcher connects while it plans the run
("join": an address), sends "attach" with the container's network namespace once it exists, and
its end closes when the launcher, its helper and PID 1 are all gone — also after SIGKILL, as the
kernel closes the descriptors of a dead process. Then the holder removes the member's veth, its
names and its forwarded ports, and with no member left it takes the lock (non-blocking: a
joiner holds it from connect to reply), removes the socket and its state, and exits.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket

from rootless.errors import NetworkError
from rootless.network.holderlog import note

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from rootless.primitives.channel import Channel

CONTROL = "ctl.sock"
STATE = "state.json"
SLIRP_API = "slirp4netns.sock"
READY_TIMEOUT = 20.0
DEFAULT_MTU = 65520


def state_dir(paths: Any, name: str) -> str:
    return str(paths.runtime / "networks" / name)


def connect(directory: str) -> Channel | None:
    """A channel to the running holder, or None when there is none (or a dead one's socket)."""
    from rootless.primitives.channel import Channel

    try:
        dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:  # no holder has run since the last one cleaned up
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        # sun_path holds 108 bytes (unix(7)): a long XDG_RUNTIME_DIR goes through the fd link.
        sock.connect(f"/proc/self/fd/{dir_fd}/{CONTROL}")
    except (FileNotFoundError, ConnectionRefusedError):  # no socket, or a dead holder's
        sock.close()
        return None
    except OSError:
        sock.close()
        raise
    finally:
        os.close(dir_fd)
    return Channel(sock)


def read_state(directory: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(directory, STATE)) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:  # written whole by write_state (rename): not a holder's file
        return None
    if not isinstance(data, dict) or not os.path.exists(f"/proc/{data.get('pid', 0)}"):
        return None
    return data


def start(paths: Any, definition: dict[str, Any], lock_fd: int) -> None:
    """Start the holder (detached: double fork, own session) and wait until it serves.

    Call with the network's lock held (lock_fd), from a single-threaded point."""
    import shutil

    from rootless.network import ipam

    directory = state_dir(paths, definition["name"])
    shutil.rmtree(directory, ignore_errors=True)  # a killed holder's leftovers
    os.makedirs(directory, mode=0o700)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(lock_fd)  # the holder must not keep the joiner's lock
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            holder_main(directory, definition, ipam.definition_path(paths, definition["name"]), ready_w)
        finally:
            os._exit(1)
    os.close(ready_w)
    os.waitpid(pid, 0)
    try:
        ready, _, _ = select.select([ready_r], [], [], READY_TIMEOUT)
        data = os.read(ready_r, 65536) if ready else b""
    finally:
        os.close(ready_r)
    msg = json.loads(data) if data else {"op": "error", "message": "the network's holder did not start"}
    if msg.get("op") != "ready":
        from rootless.primitives.channel import raise_error

        raise_error(msg)


def holder_main(directory: str, definition: dict[str, Any], definition_path: str,
                ready_w: int) -> NoReturn:
    from rootless.kernel import libc
    from rootless.primitives.channel import error_message

    step = "start the network's holder"
    try:
        os.closerange(3, ready_w)
        os.closerange(ready_w + 1, 65536)
        null = os.open("/dev/null", os.O_RDWR)
        log = os.open(os.path.join(directory, "holder.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.chdir(directory)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        libc().set_name(f"rl:[netns {definition['name']}]"[:15])
        holder = Holder(directory, definition, definition_path)
        holder.start()
    except BaseException as exc:  # noqa: BLE001 - reported to the launcher that started us
        os.write(ready_w, json.dumps(dict(error_message(step, exc), op="error")).encode())
        os._exit(1)
    os.write(ready_w, b'{"op": "ready"}')
    os.close(ready_w)
    try:
        holder.serve()
    finally:
        holder.shutdown()
    os._exit(0)


class Member:
    __slots__ = ("chan", "name", "hostname", "ip", "ifname", "helper_pid", "forwards", "attached")

    def __init__(self, chan: Channel, ifname: str) -> None:
        self.chan = chan
        self.ifname = ifname
        self.name = self.hostname = self.ip = ""
        self.helper_pid = 0
        self.forwards: list[int] = []
        self.attached = False


class Holder:
    def __init__(self, directory: str, definition: dict[str, Any], definition_path: str) -> None:
        self.directory = directory
        self.definition_path = definition_path
        self.definition = definition
        self.options = definition.get("options") or {}
        self.members: dict[int, Member] = {}
        self.counter = 0
        self.keeper_pid = 0
        self.keeper: Channel | None = None
        self.slirp: Any = None
        self.listener: socket.socket | None = None
        self.def_fd = -1

    # -- start ----------------------------------------------------------------------------
    def start(self) -> None:
        from rootless.network import bridge_ns, slirp
        from rootless.primitives.channel import Channel, raise_error
        from rootless.primitives.userns import apply_mapping, default_mapping

        d = self.definition
        mapping, helpers = default_mapping()
        ours, theirs = Channel.pair()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            ours.close()
            bridge_ns.keeper_main(theirs, d["name"], d["subnet"], d["gateway"], mapping, me)
        theirs.close()
        self.keeper_pid, self.keeper = pid, ours
        msg = ours.recv()
        if msg and msg.get("op") == "userns":
            apply_mapping(pid, mapping, helpers)
            ours.send("go")
            msg = ours.recv()
        if not msg or msg.get("op") != "ready":
            if msg and msg.get("op") == "error":
                raise_error(msg)
            raise NetworkError("the network's bridge namespace could not be created")
        opts = slirp.parse_options(",".join(f"{k}={v}" for k, v in self.options.items()
                                            if k in ("allow_host_loopback", "mtu")))
        # The members' addresses are IPv4 only (rootless.network.ipam): no IPv6 towards the
        # bridge namespace, as before slirp4netns's enable_ipv6 became rl's default.
        opts.enable_ipv6 = False
        plan = slirp.plan("", [], self.directory)
        plan.options = opts
        plan.api_socket = SLIRP_API  # relative to slirp4netns's working directory
        plan.start(self.keeper_pid, lambda text: None)
        self.slirp = plan
        self.request_keeper("tap")
        # flock(2) on this descriptor decides when the holder may exit (rootless.network.ipam);
        # opened once, so a removed definition still locks against the joiners that read it.
        self.def_fd = os.open(self.definition_path, os.O_RDONLY | os.O_CLOEXEC)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.listener.bind(CONTROL)
        self.listener.listen(64)
        self.write_state()

    def request_keeper(self, op: str, fd: int | None = None, **fields: Any) -> None:
        from rootless.primitives.channel import raise_error

        assert self.keeper is not None
        if fd is None:
            self.keeper.send(op, **fields)
        else:
            self.keeper.send_fd(op, fd, **fields)
        reply = self.keeper.recv()
        if reply is None:
            raise NetworkError("the network's bridge namespace process died")
        if reply.get("op") == "error":
            raise_error(reply)

    # -- serving --------------------------------------------------------------------------
    def serve(self) -> None:
        import fcntl

        assert self.listener is not None and self.keeper is not None
        while True:
            rlist: list[Any] = [self.listener, self.keeper.fileno(), *self.members]
            idle = not self.members
            ready, _, _ = select.select(rlist, [], [], 0.05 if idle else None)
            if self.keeper.fileno() in ready:
                return  # the keeper died: nothing can be served any more
            if self.listener in ready:
                conn, _ = self.listener.accept()
                self.counter += 1
                self.members[conn.fileno()] = Member(_channel(conn), f"rlv{self.counter}")
            for fd in [f for f in ready if isinstance(f, int) and f in self.members]:
                self.on_message(self.members[fd])
            if not self.members:
                try:
                    fcntl.flock(self.def_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # someone is joining
                # No joiner can come now: remove the socket while holding the lock.
                os.unlink(CONTROL)
                return

    def on_message(self, m: Member) -> None:
        from rootless.primitives.channel import error_message

        msg, fds = m.chan.recv_with_fds()
        try:
            if msg is None:
                self.leave(m)
                return
            op = msg.get("op")
            try:
                if op == "join":
                    self.join(m, msg)
                elif op == "attach":
                    self.attach(m, msg, fds)
                elif op == "status":
                    m.chan.send("status", **self.status())
                elif op == "shutdown":
                    # `rl network rm -f`: kill the members' containers (their helpers; PID 1
                    # follows by PR_SET_PDEATHSIG); each then leaves as usual.
                    for other in self.members.values():
                        if other.helper_pid:
                            try:
                                os.kill(other.helper_pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass  # ended meanwhile; it leaves as usual
                    m.chan.send("ok")
                else:
                    raise NetworkError(f"unknown request {op!r}")
            except Exception as exc:  # noqa: BLE001 - the member reports it
                m.chan.send("error", **error_message(f"network {self.definition['name']}: {op}", exc))
        finally:
            for fd in fds:
                os.close(fd)

    def join(self, m: Member, msg: dict[str, Any]) -> None:
        from rootless.network.ipam import allocate

        m.name, m.hostname = msg.get("name") or "", msg.get("hostname") or ""
        used = {o.ip for o in self.members.values() if o.ip}
        m.ip = allocate(self.definition["subnet"], used)
        self.write_state()
        m.chan.send("joined", ip=m.ip, keeper=self.keeper_pid, gateway=self.definition["gateway"],
                    host_loopback=self.slirp.options.allow_host_loopback)

    def attach(self, m: Member, msg: dict[str, Any], fds: list[int]) -> None:
        if not fds or not m.ip:
            raise NetworkError("attach without a network namespace or before join")
        m.helper_pid = int(msg.get("helper_pid") or 0)
        self.request_keeper("attach", fds[0], ifname=m.ifname, ip=m.ip,
                            names=[m.name, m.hostname], mtu=self.slirp.options.mtu)
        m.attached = True
        for port in msg.get("ports") or []:
            m.forwards.append(self.add_forward(port, m.ip))
        self.write_state()
        m.chan.send("attached")

    def leave(self, m: Member) -> None:
        del self.members[m.chan.fileno()]
        m.chan.close()
        for fid in m.forwards:
            try:
                self.slirp_api({"execute": "remove_hostfwd", "arguments": {"id": fid}})
            except (OSError, NetworkError, ValueError) as exc:
                # The member leaves either way; a port that stays forwarded must show.
                note("netns", f"remove the forwarded port {fid} of {m.ip}", exc)
        if m.attached:
            try:
                self.request_keeper("detach", ifname=m.ifname, ip=m.ip)
            except (OSError, NetworkError) as exc:
                note("netns", f"detach {m.ifname} ({m.ip})", exc)
        self.write_state()

    # -- published ports ------------------------------------------------------------------
    def add_forward(self, port: dict[str, Any], ip: str) -> int:
        import errno

        request = {"execute": "add_hostfwd", "arguments": {
            "proto": port["protocol"], "host_addr": port["host_ip"] or "0.0.0.0",
            "host_port": port["host_port"], "guest_addr": ip, "guest_port": port["container_port"]}}
        answer = self.slirp_api(request)
        if "return" in answer:
            return int(answer["return"]["id"])
        desc = str(answer.get("error", {}).get("desc", answer))
        from rootless.network.ports import PortMapping, port_error

        mapping = PortMapping(port["host_ip"], port["host_port"], port["container_port"], port["protocol"])
        if "in use" in desc.lower():
            raise port_error(mapping, OSError(errno.EADDRINUSE, desc))
        raise NetworkError(f"slirp4netns could not publish {mapping.describe()}: {desc}")

    def slirp_api(self, request: dict[str, Any]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(SLIRP_API)
            s.sendall(json.dumps(request).encode())
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        answer = json.loads(reply or b"{}")
        return answer if isinstance(answer, dict) else {}

    # -- state ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(), "keeper": self.keeper_pid,
            "slirp4netns": self.slirp.pid if self.slirp else None,
            "members": [{"name": m.name, "hostname": m.hostname, "ip": m.ip,
                         "helper_pid": m.helper_pid, "interface": m.ifname}
                        for m in self.members.values() if m.ip],
        }

    def write_state(self) -> None:
        tmp = STATE + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.status(), f)
        os.replace(tmp, STATE)

    def shutdown(self) -> None:
        """Remove everything this holder made; the namespaces go with the keeper."""
        import shutil

        if self.slirp is not None:
            self.slirp.stop()
        if self.keeper_pid:
            try:
                os.kill(self.keeper_pid, signal.SIGKILL)
                os.waitpid(self.keeper_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass  # it died first (serve() returns when it does) and was reaped

        def removal_failed(_fn: Any, path: str, info: Any) -> None:
            if not isinstance(info[1], FileNotFoundError):
                note("netns", f"remove {path}", info[1])

        shutil.rmtree(self.directory, onerror=removal_failed)
        try:
            os.rmdir(os.path.dirname(self.directory))  # networks/, when it was the last
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):  # another network remains
                note("netns", "remove the networks directory", exc)


def _channel(sock: socket.socket) -> Channel:
    from rootless.primitives.channel import Channel

    return Channel(sock)
