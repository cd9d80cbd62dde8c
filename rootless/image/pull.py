"""`rl pull`: resolve a reference, fetch verified blobs in parallel, unpack the new layers.

    1. parse the reference (bad ones fail here, before any network access);
    2. resolve index → manifest → config through the registry client (each verified);
    3. ONE fork into the user namespace, before any thread exists (unshare(CLONE_NEWUSER) is
       refused in a multi-threaded process: user_namespaces(7), unshare(2) EINVAL): the
       unpacker, which extracts every missing layer, several at once in forked workers;
    4. download the missing blobs with a bounded thread pool straight into the blob store
       (hashed while they stream; a mismatch discards the temporary file), handing each file
       to the unpacker as it grows (blobfeed.py), so that download and unpacking overlap;
       the unpacker verifies the blob digest over what it extracted, and renames a layer
       into place only then;
    5. wait for the unpacker, then record the image under its name.

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
from rootless.image.store import LayerSource, LocalImage, Store

if TYPE_CHECKING:
    from rootless.image.blobfeed import BlobFeed
    from rootless.image.manifest import Descriptor
    from rootless.image.reference import Reference
    from rootless.image.registry import RetryPolicy
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
    policy: RetryPolicy | None = None,
) -> LocalImage:
    """Pull ref_text into the store and return the recorded image. `policy`: time-outs and
    retries (registry.py; the default is what the README documents)."""
    from rootless.image.auth import find_credentials
    from rootless.image.manifest import parse_platform, resolve_image
    from rootless.image.progress import PullProgress
    from rootless.image.reference import parse_reference
    from rootless.image.registry import DEFAULT_POLICY, RegistryClient

    ref = parse_reference(ref_text)
    wanted = parse_platform(platform) if platform else None
    store = store or Store(paths)
    env = dict(os.environ) if env is None else env
    insecure = ref.registry in insecure_registries or ref.api_registry in insecure_registries
    progress = progress or PullProgress(quiet=quiet)
    client = RegistryClient(
        ref.registry,
        tls_verify=(not insecure) if tls_verify is None else tls_verify,
        insecure=insecure,
        credentials=find_credentials(ref.registry, paths, env),
        policy=policy or DEFAULT_POLICY,
        on_retry=lambda attempt, attempts, reason: progress.retry(None, attempt, attempts, reason),
    )
    store.ensure_dirs()
    store.clean_tmp()
    try:
        with store.using():
            progress.message(f"Trying to pull {ref}...")
            resolved = resolve_image(client, ref, wanted)
            progress.message("Getting image source signatures")
            config = json.loads(resolved.config)
            jobs = layer_jobs(resolved.layers, resolved.diff_ids)
            # largest first, on both sides: the unpacker follows the downloads' order
            missing = sorted((j for j in jobs if not store.has_layer(j.diff_id)),
                             key=lambda j: j.size, reverse=True)
            unpacker = Unpacker(store, missing)  # forks: before the download threads
            try:
                _download(client, ref, store, missing, progress, jobs, unpacker.feeds)
            except BaseException:
                unpacker.abort()
                raise
            unpacker.wait()
            progress.message(f"Copying config {resolved.config_descriptor.digest[7:19]} done")
            store.write_blob_bytes(resolved.manifest, resolved.manifest_digest)
            store.write_blob_bytes(resolved.config, resolved.config_descriptor.digest)
            progress.message("Writing manifest to image destination")
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


class Unpacker:
    """The unpacking child of one pull, started at once (see the module's doc, step 3).

    Layers whose blob the store lacks get a feed (blobfeed.py): the download hands the file
    over while writing it. wait() re-raises the child's failure; abort() tells the child that
    the downloads failed, waits for it, and keeps quiet about its (consequent) failure.
    """

    def __init__(self, store: Store, jobs: list[LayerJob],
                 notify: Callable[[str], None] = _stderr_notice) -> None:
        from rootless.image.blobfeed import feed_pair

        self.feeds: dict[str, BlobFeed] = {}
        self._sockets = []
        ends: dict[str, Any] = {}
        for job in jobs:
            if job.blob_digest not in ends and not store.has_blob(job.blob_digest):
                feed, end = feed_pair()
                self.feeds[job.blob_digest] = feed
                ends[job.blob_digest] = end
                self._sockets.append(end)

        sources = [LayerSource(j.diff_id, j.compression, j.blob_digest, j.size,
                               ends.get(j.blob_digest)) for j in jobs]

        def run() -> None:
            store.clean_layer_tmp()
            store.extract_layers(sources, notify=notify,
                                 workers=min(UNPACK_WORKERS, len(jobs), os.cpu_count() or 1))

        self._started = None
        if jobs:
            store.mark_layer_root()
            self._started = store.start_as_root(run, "rl:[unpack]")

    def abort(self) -> None:
        for feed in self.feeds.values():
            feed.fail()
        with contextlib.suppress(RlError):
            self.wait()

    def wait(self) -> None:
        started, self._started = self._started, None
        try:
            if started is not None:
                started.wait()
        except ImageError:
            raise
        except RlError as exc:
            raise ImageError(exc.message, exc.hint) from None
        finally:
            for feed in self.feeds.values():
                feed.close()
            for end in self._sockets:
                end.close()


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
              progress: Any, jobs: list[LayerJob], feeds: dict[str, BlobFeed]) -> None:
    """Fetch the blobs of missing layers, DOWNLOAD_THREADS at a time, in the order given;
    re-raise the first failure after stopping the others (their temporary files are removed
    and their feeds told as they stop)."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    wanted = {j.blob_digest: j for j in missing}
    for job in jobs:
        if job.blob_digest not in wanted:
            progress.layer_done(job.blob_digest, skipped=True)
    stop = threading.Event()

    def fetch(job: LayerJob) -> None:
        feed = feeds.get(job.blob_digest)
        if feed is None and store.has_blob(job.blob_digest):
            progress.layer_done(job.blob_digest, skipped=True)
            return

        fetched = []

        @contextlib.contextmanager
        def open_chunks() -> Iterator[Iterator[bytes]]:
            fetched.append(True)
            progress.layer_started(job.blob_digest, job.size)
            def on_retry(attempt: int, attempts: int, reason: str) -> None:
                progress.retry(job.blob_digest, attempt, attempts, reason)

            with client.blob_stream(ref.repository, job.blob_digest, job.size,
                                    on_retry) as chunks:
                yield _until(stop, chunks)

        store.ensure_blob(job.blob_digest, job.size, open_chunks,
                          on_chunk=lambda n: progress.advance(job.blob_digest, n), feed=feed)
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
    """Extract every job's stored blob into its layer directory, in one user-namespace child
    that forks up to UNPACK_WORKERS extractors (largest layers first): `rl load`."""
    Unpacker(store, sorted(jobs, key=lambda j: j.size, reverse=True), notify).wait()


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
