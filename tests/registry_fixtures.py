"""A real registry for tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1.

Plain functions, so conftest.py (or a test module) wraps them in fixtures of any scope:

    reg = start_registry(tmp_path, auth="token")   # "none" | "basic" | "token"
    try:
        client = RegistryClient(reg.url_host, insecure=True, credentials=reg.credentials)
        ...
    finally:
        reg.stop()

or `with start_registry(tmp_path) as reg: ...`. `require_registry()` skips the test when the
binary is missing, and fails it when CI=true. `push_test_images(reg)` builds the busybox
test images with scripts/build_test_images.py and pushes them.

Everything listens on 127.0.0.1 and runs as the current user (root or rltest alike).
Token auth: an in-process token server (http.server thread) signs RS256 JWTs with `openssl
dgst`, a self-signed certificate in the header's x5c chain; the registry trusts that
certificate through `auth.token.rootcertbundle`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "rl-test-registry"
ISSUER = "rl-test-token-server"
REPO_ROOT = Path(__file__).resolve().parent.parent


def require_registry() -> str:
    """The docker-registry binary; skip (fail under CI=true) when it is missing."""
    import pytest

    path = shutil.which("docker-registry") or (
        REGISTRY_BIN if os.path.exists(REGISTRY_BIN) else None
    )
    missing = [
        tool
        for tool, found in (("docker-registry", path), ("openssl", shutil.which("openssl")))
        if not found
    ]
    if missing:
        reason = f"{', '.join(missing)} not installed (apt-get install docker-registry openssl)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert path is not None
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues registry tokens: Basic credentials get what they ask for; anonymous users get
    pull access only when `anonymous_pull` is set. Counts its requests."""

    workdir: Path
    username: str
    password: str
    expires_in: int = 300
    anonymous_pull: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.key = self.workdir / "token.key"
        self.cert = self.workdir / "token.crt"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                "2",
                "-subj",
                "/CN=rl test token issuer",
                "-keyout",
                str(self.key),
                "-out",
                str(self.cert),
            ],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self._x5c = base64.b64encode(der).decode()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                owner._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        user = None
        header = handler.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user_pass = base64.b64decode(header[6:]).decode()
            if user_pass != f"{self.username}:{self.password}":
                self.requests.append({"user": "<bad>", "scope": query.get("scope")})
                handler.send_response(401)
                handler.send_header("Content-Type", "application/json")
                handler.end_headers()
                handler.wfile.write(b'{"details": "invalid username or password"}')
                return
            user = self.username
        self.requests.append({"user": user, "scope": query.get("scope")})
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            granted = wanted if user else [a for a in wanted if a == "pull" and self.anonymous_pull]
            access.append({"type": kind, "name": name, "actions": granted})
        token = self.sign(user or "", access)
        body = json.dumps({"token": token, "expires_in": self.expires_in}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": hashlib.sha256(os.urandom(16)).hexdigest(),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"


@dataclass
class RunningRegistry:
    url_host: str
    auth: str
    storage: Path
    log: Path
    process: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None

    @property
    def credentials(self) -> Any:
        from rootless.image.auth import Credentials

        if self.username is None or self.password is None:
            return None
        return Credentials(self.username, self.password)

    @property
    def token_requests(self) -> list[dict[str, Any]]:
        return self.token_server.requests if self.token_server else []

    def blob_path(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes (to tamper with them)."""
        algorithm, hexdigest = digest.split(":", 1)
        return (
            self.storage
            / "docker/registry/v2/blobs"
            / algorithm
            / hexdigest[:2]
            / hexdigest
            / "data"
        )

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far, from the access log (start_registry
        with access_log=True): the registry's own account of what a client did."""
        import re

        line = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ')
        return [(m[1], m[2], int(m[3])) for m in line.finditer(self.log.read_text(errors="replace"))]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.token_server is not None:
            self.token_server.stop()

    def __enter__(self) -> RunningRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _config(port: int, storage: Path, auth: dict[str, Any] | None, access_log: bool) -> str:
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": not access_log}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "rl-test-secret"},
    }
    if auth:
        config["auth"] = auth
    # JSON is YAML: no YAML library is needed to write the config.
    return json.dumps(config, indent=2)


def start_registry(
    tmpdir: Path,
    auth: str = "none",
    *,
    username: str = "rltester",
    password: str = "s3cret-pass",
    token_expires_in: int = 300,
    anonymous_pull: bool = False,
    access_log: bool = False,
    timeout: float = 15.0,
) -> RunningRegistry:
    """Start docker-registry on a free 127.0.0.1 port and wait until /v2/ answers.
    access_log: the registry logs every request (RunningRegistry.requests reads them)."""
    binary = require_registry()
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    storage = tmpdir / "storage"
    storage.mkdir(exist_ok=True)
    token_server = None
    auth_config: dict[str, Any] | None = None
    if auth == "basic":
        htpasswd = shutil.which("htpasswd")
        if htpasswd is None:
            import pytest

            reason = "htpasswd not installed (apt-get install apache2-utils)"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        line = subprocess.run(
            [str(htpasswd), "-Bbn", username, password], check=True, capture_output=True, text=True
        ).stdout.strip()
        (tmpdir / "htpasswd").write_text(line + "\n")
        auth_config = {"htpasswd": {"realm": "rl-test", "path": str(tmpdir / "htpasswd")}}
    elif auth == "token":
        token_server = TokenServer(
            tmpdir, username, password, expires_in=token_expires_in, anonymous_pull=anonymous_pull
        )
        token_server.start()
        auth_config = {
            "token": {
                "realm": token_server.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(token_server.cert),
            }
        }
    elif auth != "none":
        raise ValueError(f"auth must be none, basic or token, not {auth!r}")

    port = free_port()
    config = tmpdir / "config.yml"
    config.write_text(_config(port, storage, auth_config, access_log))
    log = tmpdir / "registry.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [binary, "serve", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmpdir)},
        )
    reg = RunningRegistry(
        f"127.0.0.1:{port}",
        auth,
        storage,
        log,
        process,
        username if auth != "none" else None,
        password if auth != "none" else None,
        token_server,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                break
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            reg.stop()
            raise RuntimeError(
                f"docker-registry did not start on 127.0.0.1:{port}:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.05)
    return reg


def load_image_builder() -> ModuleType:
    """scripts/build_test_images.py as a module (scripts/ is not a package)."""
    path = REPO_ROOT / "scripts" / "build_test_images.py"
    spec = importlib.util.spec_from_file_location("rl_build_test_images", path)
    assert spec is not None and spec.loader is not None
    cached = sys.modules.get(spec.name)
    if cached is not None:
        return cached
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module executes.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def push_test_images(reg: RunningRegistry) -> dict[str, str]:
    """Build and push the rltest/* images; {name: manifest (or index) digest}."""
    builder = load_image_builder()
    digests: dict[str, str] = builder.build_and_push_all(
        reg.url_host, insecure=True, credentials=reg.credentials
    )
    return digests


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class LocalServer:
    """A scripted HTTP server on 127.0.0.x (flaky registries, redirect targets...)."""

    host: str
    port: int
    requests: list[Recorded]
    _server: ThreadingHTTPServer

    @property
    def url_host(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


Reply = tuple[int, dict[str, str], bytes]


def serve_http(respond: Any, host: str = "127.0.0.1") -> LocalServer:
    """Serve `respond(recorded) -> (status, headers, body)` for every request, in a thread.
    Every request is recorded (method, path, headers) before `respond` sees it."""
    requests: list[Recorded] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            recorded = Recorded(self.command, self.path, dict(self.headers.items()))
            requests.append(recorded)
            status, headers, body = respond(recorded)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _any  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that hangs up early (a refused oversized answer) is not an error here.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server((host, 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return LocalServer(host, server.server_address[1], requests, server)


@dataclass
class Fault:
    """What the FaultProxy does to the next `times` requests whose path contains `match`:

    stall       read the request and never answer (the connection stays open)
    stall_body  send the answer's head and `after` bytes of its body, then nothing more
    cut         send the head and `after` body bytes, then close the connection (FIN)
    reset       the same, then reset it (RST, SO_LINGER 0)
    strip_range forward the request without its Range header: the registry sends it all
    """

    kind: str
    match: str = "/blobs/"
    after: int = 0
    times: int = 1


@dataclass
class ProxiedRequest:
    method: str
    path: str
    headers: dict[str, str]
    fault: str | None


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of a registry, misbehaving as told (Fault).

    Every request goes over a connection of its own (the proxy adds `Connection: close`
    both ways), so that a fault hits exactly one request. Requests are recorded.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream_host, _, port = upstream.rpartition(":")
        self.upstream_port = int(port)
        self.faults: list[Fault] = []
        self.requests: list[ProxiedRequest] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url_host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def add(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _pick(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match in path:
                    fault.times -= 1
                    return fault
        return None

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = _read_head(conn)
            if head is None:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            fault = self._pick(path)
            self.requests.append(ProxiedRequest(method, path, headers, fault.kind if fault else None))
            if fault is not None and fault.kind == "stall":
                self._stop.wait()
                return
            out = {k: v for k, v in headers.items()
                   if k.lower() not in ("connection", "keep-alive")
                   and not (fault is not None and fault.kind == "strip_range" and k.lower() == "range")}
            out["Connection"] = "close"
            request = "\r\n".join([lines[0], *(f"{k}: {v}" for k, v in out.items()), "", ""])
            with socket.create_connection((self.upstream_host, self.upstream_port)) as up:
                up.sendall(request.encode("latin-1"))
                answer = _read_head(up)
                if answer is None:
                    return
                status, *rest = answer.decode("latin-1").split("\r\n")
                kept = [line for line in rest if line and not line.lower().startswith("connection:")]
                conn.sendall("\r\n".join([status, *kept, "Connection: close", "", ""]).encode("latin-1"))
                self._relay(up, conn, fault)

    def _relay(self, up: socket.socket, conn: socket.socket, fault: Fault | None) -> None:
        limit = fault.after if fault is not None and fault.kind in ("stall_body", "cut", "reset") else None
        sent = 0
        while True:
            want = 65536 if limit is None else min(65536, limit - sent)
            if want <= 0:
                break
            data = up.recv(want)
            if not data:
                return
            conn.sendall(data)
            sent += len(data)
        assert fault is not None
        if fault.kind == "stall_body":
            self._stop.wait()
        elif fault.kind == "reset":
            # let the client read what was sent first: data still queued when the RST
            # arrives is discarded, and the break would seem to come before the body
            self._stop.wait(0.5)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _read_head(sock: socket.socket) -> bytes | None:
    """An HTTP message head (up to the blank line), read byte-exactly: what follows is body."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            return None
        data += byte
    return data[:-4]
