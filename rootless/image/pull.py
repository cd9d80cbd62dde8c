"""`rl pull`: resolve a reference, fetch verified blobs in parallel, unpack the new layers.

    1. parse the reference (bad ones fail here, before any network access);
    2. resolve index → manifest → config through the registry client (each verified);
    3. download missing layer blobs with a bounded thread pool straight into the blob store
       (hashed while they stream; a mismatch discards the temporary file);
    4. join the threads, then ONE fork into the user namespace (unshare(CLONE_NEWUSER) is
       refused in a multi-threaded process: user_namespaces(7), unshare(2) EINVAL), which
       unpacks every missing layer, several at once in forked workers;
    5. record the image under its name.

The store lock is held shared from step 2 to 5 so `rl image prune` cannot collect blobs and
layers this pull has not recorded yet.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rootless.errors import ImageError, RlError
from rootless.image.store import LocalImage, Store

if TYPE_CHECKING:
    from rootless.image.manifest import Descriptor
    from rootless.image.reference import Reference
    from rootless.paths import Paths

DOWNLOAD_THREADS = 3
UNPACK_WORKERS = 4
PULL_POLICIES = ("missing", "always", "never", "newer")


@dataclass
class LayerJob:
    diff_id: str
    blob_digest: str
    compression: str
    size: int


def _stderr_notice(text: str) -> None:
    print(f"rl: {text}", file=sys.stderr, flush=True)


def pull_image(
    ref_text: str,
    *,
    paths: Paths,
    store: Store | None = None,
    platform: str | None = None,
    tls_verify: bool | None = None,
    quiet: bool = False,
    insecure_registries: Sequence[str] = (),
    env: dict[str, str] | None = None,
    progress: Any = None,
) -> LocalImage:
    """Pull ref_text into the store and return the recorded image."""
    from rootless.image.auth import find_credentials
    from rootless.image.manifest import parse_platform, resolve_image
    from rootless.image.progress import PullProgress
    from rootless.image.reference import parse_reference
    from rootless.image.registry import RegistryClient

    ref = parse_reference(ref_text)
    wanted = parse_platform(platform) if platform else None
    store = store or Store(paths)
    env = dict(os.environ) if env is None else env
    insecure = ref.registry in insecure_registries or ref.api_registry in insecure_registries
    client = RegistryClient(
        ref.registry,
        tls_verify=(not insecure) if tls_verify is None else tls_verify,
        insecure=insecure,
        credentials=find_credentials(ref.registry, paths, env),
    )
    progress = progress or PullProgress(quiet=quiet)
    store.ensure_dirs()
    store.clean_tmp()
    try:
        with store.using():
            progress.message(f"Trying to pull {ref}...")
            resolved = resolve_image(client, ref, wanted)
            progress.message("Getting image source signatures")
            config = json.loads(resolved.config)
            jobs = layer_jobs(resolved.layers, resolved.diff_ids)
            missing = [j for j in jobs if not store.has_layer(j.diff_id)]
            _download(client, ref, store, missing, progress, jobs)
            progress.message(f"Copying config {resolved.config_descriptor.digest[7:19]} done")
            store.write_blob_bytes(resolved.manifest, resolved.manifest_digest)
            store.write_blob_bytes(resolved.config, resolved.config_descriptor.digest)
            progress.message("Writing manifest to image destination")
            unpack_layers(store, missing)
            image = store.add_image(
                manifest_digest=resolved.manifest_digest,
                config_digest=resolved.config_descriptor.digest,
                config=config,
                names=[_image_name(ref)],
                layers=[_descriptor_json(d) for d in resolved.layers],
                media_type=resolved.media_type,
            )
    finally:
        progress.finish()
        client.close()
    return image


def _image_name(ref: Reference) -> str:
    """The name recorded in the index: name:tag, or name@digest when pulled by digest only."""
    return str(ref)


def _descriptor_json(d: Descriptor) -> dict[str, Any]:
    return {"mediaType": d.media_type, "digest": d.digest, "size": d.size}


def layer_jobs(layers: list[Descriptor], diff_ids: list[str]) -> list[LayerJob]:
    """One job per distinct layer, bottom to top, with its compression from its mediaType."""
    from rootless.image.mediatypes import layer_compression

    if len(layers) != len(diff_ids):
        raise ImageError(f"the manifest has {len(layers)} layers but the config lists "
                         f"{len(diff_ids)} diff_ids")
    out: dict[str, LayerJob] = {}
    for desc, diff_id in zip(layers, diff_ids, strict=True):
        out.setdefault(diff_id, LayerJob(diff_id, desc.digest, layer_compression(desc.media_type),
                                         desc.size))
    return list(out.values())


def _download(client: Any, ref: Reference, store: Store, missing: list[LayerJob],
              progress: Any, jobs: list[LayerJob]) -> None:
    """Fetch the blobs of missing layers, DOWNLOAD_THREADS at a time; re-raise the first
    failure after stopping the others (their temporary files are removed as they stop)."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    wanted = {j.blob_digest: j for j in missing}
    for job in jobs:
        if job.blob_digest not in wanted:
            progress.layer_done(job.blob_digest, skipped=True)
    stop = threading.Event()

    def fetch(job: LayerJob) -> None:
        if store.has_blob(job.blob_digest):
            progress.layer_done(job.blob_digest, skipped=True)
            return

        fetched = []

        @contextlib.contextmanager
        def open_chunks() -> Iterator[Iterator[bytes]]:
            fetched.append(True)
            progress.layer_started(job.blob_digest, job.size)
            with client.blob_stream(ref.repository, job.blob_digest, job.size) as chunks:
                yield _until(stop, chunks)

        store.ensure_blob(job.blob_digest, job.size, open_chunks,
                          on_chunk=lambda n: progress.advance(job.blob_digest, n))
        # not fetched: another pull stored it while this one waited for the blob's lock
        progress.layer_done(job.blob_digest, skipped=not fetched)

    if not wanted:
        return
    pool = ThreadPoolExecutor(max_workers=min(DOWNLOAD_THREADS, len(wanted)),
                              thread_name_prefix="rl-pull")
    try:
        futures = [pool.submit(fetch, job) for job in wanted.values()]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _until(stop: threading.Event, chunks: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        if stop.is_set():
            raise ImageError("download stopped")
        yield chunk


def unpack_layers(store: Store, jobs: list[LayerJob],
                  notify: Callable[[str], None] = _stderr_notice) -> None:
    """Extract every job's blob into its layer directory, in one user-namespace child that
    forks up to UNPACK_WORKERS extractors (largest layers first)."""
    if not jobs:
        return
    ordered = sorted(jobs, key=lambda j: j.size, reverse=True)

    def run() -> None:
        store.clean_layer_tmp()
        workers = min(UNPACK_WORKERS, len(ordered), os.cpu_count() or 1)
        if workers <= 1:
            for job in ordered:
                store.extract_layer(job.diff_id, job.compression, job.blob_digest, notify)
            return
        run_parallel([
            (lambda job=job: store.extract_layer(job.diff_id, job.compression,
                                                 job.blob_digest, notify))
            for job in ordered
        ], workers)

    try:
        store.as_root(run, "rl:[unpack]")
    except ImageError:
        raise
    except RlError as exc:
        raise ImageError(exc.message, exc.hint) from None


def run_parallel(tasks: list[Callable[[], object]], workers: int) -> None:
    """Run tasks in up to `workers` forked processes; raise the first failure as ImageError.

    Called inside the namespace child, which is single-threaded, so fork is safe.
    """
    from rootless.primitives.channel import error_message

    pending = list(enumerate(tasks))
    running: dict[int, int] = {}  # pid -> read end of its error pipe
    errors: list[dict[str, Any]] = []
    while pending or running:
        while pending and len(running) < workers and not errors:
            _, task = pending.pop(0)
            r, w = os.pipe()
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.close(r)
                    task()
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    os.write(w, json.dumps(error_message("unpacking a layer", exc)).encode()[:60000])
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            os.close(w)
            running[pid] = r
        if not running:
            break
        pid, status = os.wait()
        r = running.pop(pid, None)
        if r is None:
            continue
        with os.fdopen(r, "rb") as f:
            data = f.read()
        if os.waitstatus_to_exitcode(status) != 0:
            errors.append(json.loads(data) if data else
                          {"message": f"a layer extractor exited with status {status}"})
    if errors:
        first = errors[0]
        raise ImageError(first.get("message") or "unpacking a layer failed", first.get("hint"))


def short_name_candidates(text: str, search: Sequence[str]) -> list[str]:
    """podman's short-name search: a name whose first component is not a registry (no '.',
    ':' or 'localhost', as docker decides) is tried in each search registry, in order."""
    first, sep, _ = text.partition("/")
    is_short = not sep or ("." not in first and ":" not in first and first != "localhost"
                           and first == first.lower())
    if not is_short or not search or list(search) == ["docker.io"]:
        return [text]
    return [f"{registry}/{text}" for registry in search]


def ensure_image(
    ref_text: str,
    *,
    paths: Paths,
    store: Store | None = None,
    pull_policy: str = "missing",
    platform: str | None = None,
    tls_verify: bool | None = None,
    quiet: bool = False,
    insecure_registries: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> LocalImage:
    """The local image for ref_text, pulled according to podman's --pull policy."""
    if pull_policy not in PULL_POLICIES:
        from rootless.errors import UsageError

        raise UsageError(f"invalid --pull policy {pull_policy!r}",
                         f"use one of: {', '.join(PULL_POLICIES)}")
    store = store or Store(paths)
    local = store.get_image(ref_text)
    if pull_policy == "never":
        if local is None:
            raise ImageError(f"{ref_text}: image not known",
                             f"pull it first ('rl pull {ref_text}') or use --pull=missing")
        return local
    if local is not None and pull_policy == "missing":
        if platform is None or _platform_matches(local, platform):
            return local
    try:
        return pull_image(ref_text, paths=paths, store=store, platform=platform,
                          tls_verify=tls_verify, quiet=quiet,
                          insecure_registries=insecure_registries, env=env)
    except RlError:
        if pull_policy == "newer" and local is not None:
            return local  # podman: "newer" falls back to the local image when the check fails
        raise


def _platform_matches(image: LocalImage, platform: str) -> bool:
    from rootless.image.manifest import Platform, parse_platform

    want = parse_platform(platform).normalized()
    have = Platform(str(image.config.get("os", "linux")),
                    str(image.config.get("architecture", "")),
                    image.config.get("variant")).normalized()
    return want == have
