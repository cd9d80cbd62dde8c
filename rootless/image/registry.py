"""A client for the OCI distribution API (Docker registry HTTP API v2).

Only imported on pull, push and login paths: it loads httpx, chosen because it is a maintained
HTTP/1.1 client with streaming bodies, per-phase timeouts and redirects that can be turned off,
so that rl follows them itself and decides which host sees the Authorization header.

Authentication follows the registry's `WWW-Authenticate` challenge (distribution's
docs/spec/auth/token.md): the first request goes out bare; a 401 names the scheme.
  - Bearer: GET <realm>?service=<service>&scope=repository:<name>:pull[,push], with Basic
    credentials when rl has them (or an OAuth2 refresh-token POST for an identity token).
    The token is reused per scope until `expires_in` (default 60 s) runs out.
  - Basic: the credentials go with every request to the registry's own origin.
A 401 is retried once with a fresh token; a second one is an error.

Transport: with tls_verify=True (the default) only HTTPS with certificate verification.
With tls_verify=False or insecure=True (podman's `--tls-verify=false` / registries.conf
`insecure = true`) rl tries HTTPS without verification first and falls back to plain HTTP
when the HTTPS connection cannot be made, as containers/image does; the choice is made once
per client.

Everything fetched is verified: manifests against the digest asked for (or hashed when asked
by tag, with Docker-Content-Digest as a cross-check only), blobs against their digest and
descriptor size as they stream.

Time-outs and retries (RetryPolicy; README "Registries that do not answer"): a connection
must be made within 10 s and the registry must send something at least every 15 s. A
request that fails for a transient reason (no connection, a time-out, a reset, 408, 429
with Retry-After, 5xx) is tried again after 0.5, 1 and 2 s, but no new attempt starts more
than 45 s after the first: a registry that accepts connections and never answers fails a
request in about 47 s. A blob download that breaks after it started is resumed where it
stopped (an HTTP Range request; a registry that ignores Range sends the whole blob again
and rl skips what it has), at most 20 times per blob, and not once the registry has sent
nothing for 45 s. Each retry is reported (on_retry), so that the progress line shows it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import httpx

from rootless.errors import RegistryError, UsageError
from rootless.image.auth import Credentials
from rootless.image.reference import api_host, validate_digest

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_TOKEN_RESPONSE = 1024 * 1024
MAX_ERROR_BODY = 64 * 1024
BLOB_CHUNK = 1024 * 1024
UPLOAD_CHUNK = 16 * 1024 * 1024
MAX_REDIRECTS = 10
DEFAULT_TOKEN_LIFETIME = 60.0
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_NOT_KNOWN_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"})
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
USER_AGENT = "rl/0.1 (rootless containers)"

Content = bytes | Callable[[], Iterator[bytes]] | None
# on_retry(attempt, attempts, reason): attempt 2 of 4 is about to start because of `reason`
OnRetry = Callable[[int, int, str], None]
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class RetryPolicy:
    """How long rl waits for a registry and how often it tries again (module doc)."""

    connect_timeout: float = 10.0
    read_timeout: float = 15.0  # the longest silence accepted, before or inside an answer
    retries: int = 3
    backoff: float = 0.5  # the first pause; doubled after each attempt
    budget: float = 45.0  # no new attempt starts later than this after the first one
    max_retry_after: float = 30.0
    resumes: int = 20  # resumed blob downloads, at most, per blob

    def delay(self, attempt: int) -> float:
        """The pause before attempt `attempt + 1` (attempt counts from 0)."""
        return float(self.backoff * 2**attempt)

    def may_retry(self, attempt: int, elapsed: float) -> bool:
        """Whether attempt `attempt + 1` may start, `elapsed` seconds after the first."""
        return attempt < self.retries and elapsed <= self.budget

    def worst_case(self) -> float:
        """The longest one request to a registry that never answers can take."""
        elapsed = self.connect_timeout + self.read_timeout
        attempt = 0
        while self.may_retry(attempt, elapsed):
            elapsed += self.delay(attempt) + self.connect_timeout + self.read_timeout
            attempt += 1
        return elapsed


DEFAULT_POLICY = RetryPolicy()


def new_hasher(digest: str) -> hashlib._Hash:
    """A hashlib object for the algorithm of `digest` (sha256 or sha512)."""
    try:
        validate_digest(digest)
    except UsageError as exc:
        raise RegistryError(exc.message) from None
    return hashlib.new(digest.split(":", 1)[0])


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """('bearer', {'realm': ..., 'service': ...}) from a WWW-Authenticate value."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (
            m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3)
        )
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def _registry_errors(body: bytes) -> list[tuple[str, str]]:
    """[(code, message)] from a registry error body ({"errors": [{"code", "message"}]})."""
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return []
    return [
        (str(e.get("code", "")), str(e.get("message", ""))) for e in errors if isinstance(e, dict)
    ]


def _same_origin(a: str, b: str) -> bool:
    ua, ub = urlsplit(a), urlsplit(b)
    return (ua.scheme, ua.hostname, ua.port) == (ub.scheme, ub.hostname, ub.port)


class _Token:
    __slots__ = ("value", "expires")

    def __init__(self, value: str, expires: float) -> None:
        self.value = value
        self.expires = expires


class RegistryClient:
    """One registry, one HTTP connection pool. Safe to share between download threads."""

    def __init__(
        self,
        registry: str,
        *,
        tls_verify: bool = True,
        insecure: bool = False,
        credentials: Credentials | None = None,
        policy: RetryPolicy = DEFAULT_POLICY,
        on_retry: OnRetry | None = None,
    ) -> None:
        self.registry = registry
        self.host = api_host(registry)
        self.insecure = insecure or not tls_verify
        self.credentials = credentials
        self.policy = policy
        # reports the retries of requests other than blob downloads (those have their own)
        self.on_retry = on_retry
        self._scheme: str | None = None if self.insecure else "https"
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()
        self._client = httpx.Client(
            verify=not self.insecure,
            timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    # lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # URLs ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._scheme is None:
            self._scheme = self._probe_scheme()
        return f"{self._scheme}://{self.host}"

    def _probe_scheme(self) -> str:
        # Insecure registries: HTTPS without verification when it answers at all, else HTTP.
        # A plain-HTTP server answers a TLS hello at once (an error or a close); only a
        # registry that answers nothing at all waits for the whole (shorter) time-out here.
        probe = min(self.policy.read_timeout, 5.0)
        try:
            with self._client.stream("GET", f"https://{self.host}/v2/",
                                     timeout=httpx.Timeout(probe, connect=self.policy.connect_timeout)):
                return "https"
        except httpx.TransportError:
            return "http"

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url + path_or_url

    # sending ---------------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        content: Content = None,
        auth: Callable[[], dict[str, str]] | None = None,
        on_retry: OnRetry | None = None,
        since: float | None = None,
    ) -> httpx.Response:
        """One request with retries for transient failures; the response is streamed.

        The retry budget counts from `since` (default: now): a resumed blob download passes
        the time its last byte arrived, so that a registry silent for that long gives up."""
        policy = self.policy
        report = on_retry or self.on_retry
        first = time.monotonic() if since is None else since
        attempt = 0
        while True:
            request_headers = dict(headers or {})
            if auth is not None:
                request_headers.update(auth())
            body = content() if callable(content) else content
            try:
                request = self._client.build_request(
                    method, url, headers=request_headers, content=body
                )
                response = self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                if _is_tls_error(exc):
                    raise RegistryError(
                        f"{what}: TLS with registry {self.registry} failed: {exc}",
                        "if it is a plain-HTTP registry you trust, use --tls-verify=false",
                    ) from None
                reason = self._transport_reason(exc)
                if policy.may_retry(attempt, time.monotonic() - first):
                    self._retry(report, attempt, reason)
                    attempt += 1
                    continue
                raise RegistryError(
                    f"{what}: {reason} ({attempt + 1} attempt{'s' if attempt else ''} in "
                    f"{time.monotonic() - first:.0f} s)",
                    "check the registry name and your network; for a plain-HTTP registry "
                    "use --tls-verify=false",
                ) from None
            if response.status_code in TRANSIENT_STATUS and policy.may_retry(
                    attempt, time.monotonic() - first):
                delay = self._retry_after(response) if response.status_code in (429, 503) else None
                response.close()
                self._retry(report, attempt, f"HTTP {response.status_code}", delay)
                attempt += 1
                continue
            return response

    def _retry(self, report: OnRetry | None, attempt: int, reason: str,
               delay: float | None = None) -> None:
        """Say that attempt `attempt + 2` is coming, then pause before it."""
        if report is not None:
            report(attempt + 2, self.policy.retries + 1, reason)
        self._sleep(self.policy.delay(attempt) if delay is None else delay)

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("Retry-After", "").strip()
        if not value.isdigit():
            return None
        return min(float(value), self.policy.max_retry_after)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def _transport_reason(self, exc: httpx.TransportError) -> str:
        """What went wrong with the connection, in the user's words."""
        if isinstance(exc, httpx.ConnectTimeout):
            return f"cannot connect to registry {self.registry} within {self.policy.connect_timeout:g} s"
        if isinstance(exc, httpx.TimeoutException):
            return f"registry {self.registry} sent nothing for {self.policy.read_timeout:g} s"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot reach registry {self.registry}: {exc or type(exc).__name__}"
        if isinstance(exc, httpx.RemoteProtocolError):
            return f"registry {self.registry} closed the connection early"
        if isinstance(exc, httpx.ReadError):
            return f"the connection to registry {self.registry} broke: {exc or 'reset'}"
        return f"registry {self.registry}: {exc or type(exc).__name__}"

    def _request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str | None,
        what: str,
        headers: dict[str, str] | None = None,
        content: Content = None,
        on_retry: OnRetry | None = None,
        since: float | None = None,
    ) -> httpx.Response:
        """A request to the registry itself: authenticated as its last challenge asked."""
        url = self._url(path_or_url)
        refreshed = False
        while True:
            response = self._send(
                method,
                url,
                what=what,
                headers=headers,
                content=content,
                auth=lambda: self._auth_headers(scope, what),
                on_retry=on_retry,
                since=since,
            )
            if response.status_code != 401 or refreshed:
                return response
            challenges = response.headers.get_list("WWW-Authenticate")
            response.read()
            response.close()
            challenge = _pick_challenge(challenges)
            if challenge is None:
                return response
            with self._lock:
                self._challenge = challenge
                self._tokens.pop(scope or "", None)
            if challenge[0] == "basic" and self.credentials is None:
                return response
            refreshed = True

    def _auth_headers(self, scope: str | None, what: str) -> dict[str, str]:
        challenge = self._challenge
        if challenge is None:
            return {}
        scheme, params = challenge
        if scheme == "basic":
            if self.credentials is None:
                return {}
            raw = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {"Authorization": "Bearer " + self._token(scope, params, what)}

    def _token(self, scope: str | None, params: dict[str, str], what: str) -> str:
        key = scope or ""
        with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires > time.monotonic():
                return cached.value
            token = self._fetch_token(scope, params, what)
            self._tokens[key] = token
            return token.value

    def _fetch_token(self, scope: str | None, params: dict[str, str], what: str) -> _Token:
        realm = params.get("realm")
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise RegistryError(
                f"{what}: registry {self.registry} sent a bearer challenge without a usable realm"
            )
        if urlsplit(realm).scheme == "http" and not self.insecure:
            raise RegistryError(
                f"{what}: registry {self.registry} asks for credentials over plain HTTP ({realm})",
                "use --tls-verify=false only for registries you trust",
            )
        query: dict[str, str] = {}
        if params.get("service"):
            query["service"] = params["service"]
        if scope:
            query["scope"] = scope
        creds = self.credentials
        started = time.monotonic()
        if creds is not None and creds.identity_token:
            form = dict(
                query,
                grant_type="refresh_token",
                refresh_token=creds.identity_token,
                client_id="rl",
            )
            response = self._send(
                "POST",
                realm,
                what=what,
                content=str(httpx.QueryParams(form)).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        else:
            headers = {}
            if creds is not None:
                raw = f"{creds.username}:{creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            url = str(httpx.URL(realm).copy_merge_params(query))
            response = self._send("GET", url, what=what, headers=headers)
        body = _read_limited(response, MAX_TOKEN_RESPONSE, what, self.registry)
        if response.status_code in (401, 403):
            if creds is not None:
                raise RegistryError(
                    f"{what}: {self.registry} refused the credentials: invalid username "
                    f"or password (HTTP {response.status_code})",
                    f"log in again: rl login {self.registry}",
                )
            raise RegistryError(
                f"{what}: {self.registry} requires authentication (HTTP {response.status_code})",
                f"log in first: rl login {self.registry}",
            )
        if response.status_code != 200:
            raise RegistryError(
                f"{what}: the token server of {self.registry} answered HTTP {response.status_code}"
            )
        import json

        try:
            data = json.loads(body)
            value = data.get("token") or data.get("access_token")
            lifetime = float(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            value, lifetime = None, 0.0
        if not isinstance(value, str) or not value:
            raise RegistryError(f"{what}: the token server of {self.registry} sent no token")
        # Keep a margin so a token is not sent in the second it expires.
        return _Token(value, started + max(lifetime, 1.0) * 0.9)

    # errors ----------------------------------------------------------------------------------
    def _fail(self, response: httpx.Response, what: str, name: str | None = None) -> RegistryError:
        try:
            body = _read_limited(response, MAX_ERROR_BODY, what, self.registry)
        except RegistryError:
            body = b""
        finally:
            response.close()
        errors = _registry_errors(body)
        code = errors[0][0] if errors else ""
        detail = errors[0][1] if errors else ""
        status = response.status_code
        if status == 404 or code in _NOT_KNOWN_CODES:
            thing = "blob" if code == "BLOB_UNKNOWN" else "image"
            return RegistryError(
                f"{thing} not known: {name or self.registry} ({code or 'HTTP 404'})",
                "check the name and tag; `rl login` first if the repository is private",
            )
        if status == 401:
            if self.credentials is not None and self._challenge and self._challenge[0] == "basic":
                return RegistryError(
                    f"{what}: {self.registry} refused the credentials: invalid username or "
                    f"password (HTTP 401 {code or 'UNAUTHORIZED'})",
                    f"log in again: rl login {self.registry}",
                )
            if self.credentials is not None:
                return RegistryError(
                    f"{what}: {self.registry} refused the credentials (HTTP 401 {code or 'UNAUTHORIZED'})",
                    f"check the user's access, or log in again: rl login {self.registry}",
                )
            return RegistryError(
                f"{what}: {self.registry} requires authentication (HTTP 401 {code or 'UNAUTHORIZED'})",
                f"log in first: rl login {self.registry}",
            )
        if status == 403:
            return RegistryError(
                f"{what}: access denied by {self.registry} (HTTP 403 {code or 'DENIED'})"
            )
        suffix = f" {code}" if code else ""
        suffix += f": {detail}" if detail else ""
        return RegistryError(f"{what}: registry {self.registry} answered HTTP {status}{suffix}")

    # for rootless.image.push, which holds the upload protocol ----------------------------------
    def request(self, method: str, path_or_url: str, *, repository: str, what: str,
                headers: dict[str, str] | None = None, content: Content = None,
                push: bool = True) -> httpx.Response:
        """An authenticated request with retries (scope: the repository, pull[,push])."""
        return self._request(method, path_or_url, scope=_scope(repository, push=push), what=what,
                             headers=headers, content=content)

    def fail(self, response: httpx.Response, what: str) -> RegistryError:
        return self._fail(response, what)

    def location(self, response: httpx.Response, what: str) -> str:
        return self._location(response, what)

    # API -------------------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/ with authentication: succeeds when the registry accepts rl's credentials."""
        what = f"logging in to {self.registry}"
        response = self._request("GET", "/v2/", scope=None, what=what)
        if response.status_code != 200:
            raise self._fail(response, what)
        response.close()

    def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str]
    ) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index, verified against its digest."""
        by_digest = ":" in reference
        name = f"{self.registry}/{repository}" + (f"@{reference}" if by_digest else f":{reference}")
        what = f"fetching manifest {name}"
        if by_digest:
            new_hasher(reference)
        response = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scope=_scope(repository),
            what=what,
            headers={"Accept": ", ".join(accept)},
        )
        if response.status_code != 200:
            raise self._fail(response, what, name)
        body = _read_limited(response, MAX_MANIFEST_SIZE, what, self.registry)
        if by_digest:
            hasher = new_hasher(reference)
            hasher.update(body)
            digest = f"{hasher.name}:{hasher.hexdigest()}"
            if digest != reference:
                raise RegistryError(
                    f"{what}: the registry sent content with digest {digest}",
                    "the registry or something between it and you altered the manifest",
                )
        else:
            digest = sha256_digest(body)
            claimed = response.headers.get("Docker-Content-Digest", "")
            if claimed.startswith("sha256:") and claimed != digest:
                raise RegistryError(
                    f"{what}: the manifest's digest is {digest} but the registry says {claimed}"
                )
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return body, _manifest_media_type(media_type, body), digest

    @contextmanager
    def blob_stream(
        self, repository: str, digest: str, size: int | None, on_retry: OnRetry | None = None
    ) -> Iterator[Iterator[bytes]]:
        """Chunks of a blob, verified while they stream, resumed when the download breaks.

        The iterator raises RegistryError when more than `size` bytes arrive, and after the
        last chunk when the size or digest is wrong: the consumer must then discard what it
        wrote. Redirects (to a storage host) are followed without the Authorization header
        unless they stay on the registry's own origin. on_retry hears of every retry.
        """
        hasher = new_hasher(digest)
        name = f"{self.registry}/{repository}@{digest}"
        what = f"fetching blob {name}"
        download = _BlobDownload(self, repository, digest, size, what, name, on_retry)
        download.response = self._blob_response(repository, digest, what, name, 0, on_retry)
        try:
            length = download.response.headers.get("Content-Length")
            if size is not None and length is not None and length.isdigit() and int(length) != size:
                raise RegistryError(
                    f"{what}: the registry sends {length} bytes but the descriptor says {size}"
                )
            yield download.chunks(hasher)
        finally:
            download.response.close()

    def _blob_response(self, repository: str, digest: str, what: str, name: str,
                       start: int = 0, on_retry: OnRetry | None = None,
                       since: float | None = None) -> httpx.Response:
        """The answer to GET blob, from byte `start` on (a Range request) when start > 0:
        status 206 when the registry honours the range, 200 when it sends it all."""
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        scope = _scope(repository)
        url = self._url(f"/v2/{repository}/blobs/{digest}")
        response = self._request("GET", url, scope=scope, what=what, headers=headers,
                                 on_retry=on_retry, since=since)
        for _ in range(MAX_REDIRECTS):
            if response.status_code not in _REDIRECT_STATUS:
                break
            location = response.headers.get("Location")
            response.close()
            if not location:
                raise RegistryError(f"{what}: {self.registry} redirected without a Location")
            url = urljoin(url, location)
            if _same_origin(url, self.base_url):
                response = self._request("GET", url, scope=scope, what=what, headers=headers,
                                         on_retry=on_retry, since=since)
            else:
                # Another host (a CDN or object store): rl's credentials never go there.
                response = self._send("GET", url, what=what, headers=headers, on_retry=on_retry,
                                      since=since)
        else:
            response.close()
            raise RegistryError(f"{what}: more than {MAX_REDIRECTS} redirects")
        if response.status_code == 200 or (start and response.status_code == 206):
            return response
        raise self._fail(response, what, name)

    def fetch_blob(self, repository: str, digest: str, size: int | None, dest: BinaryIO) -> None:
        """Write a verified blob to `dest` (the caller discards `dest` when this raises)."""
        with self.blob_stream(repository, digest, size) as chunks:
            for chunk in chunks:
                dest.write(chunk)

    def read_blob(self, repository: str, digest: str, size: int | None, limit: int) -> bytes:
        """A small verified blob (a config) in memory; refused when larger than `limit`."""
        if size is not None and size > limit:
            raise RegistryError(
                f"fetching blob {self.registry}/{repository}@{digest}: {size} bytes is more "
                f"than rl accepts for it ({limit})"
            )
        parts: list[bytes] = []
        received = 0
        with self.blob_stream(repository, digest, size) as chunks:
            for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    raise RegistryError(
                        f"fetching blob {self.registry}/{repository}@{digest}: more than {limit} bytes"
                    )
                parts.append(chunk)
        return b"".join(parts)

    def blob_exists(self, repository: str, digest: str) -> bool:
        what = f"checking blob {self.registry}/{repository}@{digest}"
        response = self._request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scope=_scope(repository, push=True),
            what=what,
        )
        if response.status_code in (200, 404):
            response.close()
            return response.status_code == 200
        raise self._fail(response, what)  # (it reads the answer, so it must still be open)

    def push_blob(self, repository: str, data_or_path: bytes | Path, digest: str) -> None:
        """Upload a blob unless the registry has it: one PUT for bytes, PATCH chunks for a file."""
        hasher = new_hasher(digest)
        what = f"pushing blob {digest} to {self.registry}/{repository}"
        if self.blob_exists(repository, digest):
            return
        scope = _scope(repository, push=True)
        if isinstance(data_or_path, bytes):
            hasher.update(data_or_path)
            _check_local_digest(hasher, digest, what)
        response = self._request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, what=what)
        if response.status_code != 202:
            raise self._fail(response, what)
        location = self._location(response, what)
        if isinstance(data_or_path, Path):
            offset = 0
            with open(data_or_path, "rb") as f:
                while chunk := f.read(UPLOAD_CHUNK):
                    hasher.update(chunk)
                    response = self._request(
                        "PATCH",
                        location,
                        scope=scope,
                        what=what,
                        content=chunk,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                        },
                    )
                    if response.status_code != 202:
                        raise self._fail(response, what)
                    location = self._location(response, what)
                    offset += len(chunk)
            _check_local_digest(hasher, digest, what)
            body = b""
        else:
            body = data_or_path
        url = str(httpx.URL(location).copy_merge_params({"digest": digest}))
        response = self._request(
            "PUT",
            url,
            scope=scope,
            what=what,
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
        if response.status_code != 201:
            raise self._fail(response, what)
        response.close()

    def _location(self, response: httpx.Response, what: str) -> str:
        location: str | None = response.headers.get("Location")
        response.close()
        if not location:
            raise RegistryError(f"{what}: {self.registry} sent no upload Location")
        return urljoin(str(response.url), location)

    def push_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or digest; returns its digest."""
        digest = sha256_digest(body)
        what = f"pushing manifest {self.registry}/{repository}:{reference}"
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=_scope(repository, push=True),
            what=what,
            content=body,
            headers={"Content-Type": media_type},
        )
        if response.status_code not in (200, 201):
            raise self._fail(response, what)
        response.close()
        claimed = response.headers.get("Docker-Content-Digest", "")
        if claimed.startswith("sha256:") and claimed != digest:
            raise RegistryError(f"{what}: the registry stored digest {claimed}, rl sent {digest}")
        return digest


class _BlobDownload:
    """One blob's bytes across the attempts it takes (RetryPolicy: resumes)."""

    def __init__(self, client: RegistryClient, repository: str, digest: str, size: int | None,
                 what: str, name: str, on_retry: OnRetry | None) -> None:
        self.client = client
        self.repository = repository
        self.digest = digest
        self.size = size
        self.what = what
        self.name = name
        self.on_retry = on_retry
        self.response: httpx.Response | None = None

    def chunks(self, hasher: hashlib._Hash) -> Iterator[bytes]:
        policy = self.client.policy
        received = 0
        skip = 0  # bytes a full (200) answer repeats of what was already received
        resumes = 0
        quiet_since = time.monotonic()  # when the last byte arrived
        while True:
            assert self.response is not None
            try:
                for chunk in self.response.iter_bytes(BLOB_CHUNK):
                    quiet_since = time.monotonic()
                    if skip:
                        dropped = min(skip, len(chunk))
                        skip -= dropped
                        chunk = chunk[dropped:]
                        if not chunk:
                            continue
                    received += len(chunk)
                    if self.size is not None and received > self.size:
                        raise RegistryError(
                            f"{self.what}: more data than the descriptor's {self.size} bytes")
                    hasher.update(chunk)
                    yield chunk
                if skip:
                    raise RegistryError(f"{self.what}: the registry's second answer is shorter "
                                        "than its first")
                break
            except httpx.TransportError as exc:
                self.response.close()
                reason = self.client._transport_reason(exc)
                silent = time.monotonic() - quiet_since
                if resumes >= policy.resumes or not policy.may_retry(0, silent):
                    raise RegistryError(
                        f"{self.what}: the download broke off after {received} bytes "
                        f"({resumes + 1} attempts): {reason}",
                        "the registry or the network between keeps failing; try again later",
                    ) from None
                resumes += 1
                if self.on_retry is not None:
                    self.on_retry(resumes + 1, policy.resumes + 1,
                                  f"{reason} after {received} bytes; resuming")
                self.client._sleep(policy.delay(0))
                self.response = self.client._blob_response(
                    self.repository, self.digest, self.what, self.name, received, self.on_retry,
                    since=quiet_since)
                skip = self._skip(received)
        if self.size is not None and received != self.size:
            raise RegistryError(
                f"{self.what}: received {received} bytes, the descriptor says {self.size}")
        actual = f"{hasher.name}:{hasher.hexdigest()}"
        if actual != self.digest:
            raise RegistryError(
                f"{self.what}: digest mismatch: the content has digest {actual}",
                "the blob was altered in the registry or in transit; it was discarded",
            )

    def _skip(self, received: int) -> int:
        """How much of the new answer repeats bytes already received (checks a 206's range)."""
        assert self.response is not None
        if self.response.status_code == 200:
            return received  # the registry ignored Range: start over, skipping what rl has
        found = _CONTENT_RANGE.fullmatch(self.response.headers.get("Content-Range", "").strip())
        if found is None or int(found.group(1)) != received:
            self.response.close()
            raise RegistryError(f"{self.what}: the registry answered a range request for byte "
                                f"{received} with Content-Range "
                                f"{self.response.headers.get('Content-Range')!r}")
        return 0


def _scope(repository: str, push: bool = False) -> str:
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


def _pick_challenge(values: list[str]) -> tuple[str, dict[str, str]] | None:
    parsed = [parse_challenge(v) for v in values if v.strip()]
    for scheme in ("bearer", "basic"):
        for challenge in parsed:
            if challenge[0] == scheme:
                return challenge
    return None


def _is_tls_error(exc: BaseException) -> bool:
    """Certificate and handshake failures are not transient: retrying will not help."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _check_local_digest(hasher: hashlib._Hash, digest: str, what: str) -> None:
    actual = f"{hasher.name}:{hasher.hexdigest()}"
    if actual != digest:
        raise RegistryError(f"{what}: the data to push has digest {actual}")


def _read_limited(response: httpx.Response, limit: int, what: str, registry: str) -> bytes:
    """The whole body, at most `limit` bytes; the response is closed."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        response.close()
        raise RegistryError(
            f"{what}: {registry} announces {length} bytes, more than the {limit} rl accepts"
        )
    parts: list[bytes] = []
    total = 0
    try:
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > limit:
                raise RegistryError(
                    f"{what}: {registry} sent more than the {limit} bytes rl accepts"
                )
            parts.append(chunk)
    except httpx.TransportError as exc:
        raise RegistryError(f"{what}: the answer from {registry} broke off: {exc}") from None
    finally:
        response.close()
    return b"".join(parts)


def _manifest_media_type(header: str, body: bytes) -> str:
    """The Content-Type when it is specific, else the body's own mediaType or shape."""
    if header and header not in ("application/json", "text/plain", "application/octet-stream"):
        return header
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return header
    if not isinstance(data, dict):
        return header
    declared = data.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    from rootless.image import mediatypes

    if data.get("schemaVersion") == 1:
        return mediatypes.DOCKER_SCHEMA1
    if "manifests" in data:
        return mediatypes.OCI_INDEX
    if "config" in data and "layers" in data:
        return mediatypes.OCI_MANIFEST
    return header
