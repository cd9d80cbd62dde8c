"""Commands that make and publish images, with podman's names, flags and output:
build, push, commit, tag, untag, history, image inspect, builder prune.

Errors are raised as RlError; rootless.cli prints them. The builder, the registry client and
the store are imported inside the commands so `rl --help` stays fast.
"""

from __future__ import annotations

import json
import os
from typing import Any

import typer

from rootless.errors import ImageError


def _paths() -> Any:
    from rootless.paths import Paths

    return Paths.from_env()


def _store() -> Any:
    from rootless.image.store import Store

    return Store(_paths())


def _find(store: Any, name: str) -> Any:
    found = store.get_image(name)
    if found is None:
        raise ImageError(f"{name}: image not known", exit_code=125)
    return found


def _bool(flag: str, value: str) -> bool:
    from rootless.cli.build_fast import parse_bool

    return parse_bool(flag, value)


# -- history / inspect -----------------------------------------------------------------------
def history_rows(image: Any, store: Any) -> list[dict[str, Any]]:
    """podman history: newest first; the layer ID on the entry that made the layer."""
    history = list(image.config.get("history") or [])
    diff_ids = list(image.diff_ids)
    rows = []
    layer = 0
    for entry in history:
        empty = bool(entry.get("empty_layer"))
        size = 0
        layer_id = "<missing>"
        if not empty and layer < len(diff_ids):
            size = store.layer_size(diff_ids[layer])
            layer += 1
        rows.append({"created": entry.get("created", ""), "created_by": entry.get("created_by", ""),
                     "comment": entry.get("comment", ""), "size": size, "id": layer_id})
    rows.reverse()
    if rows:
        rows[0]["id"] = image.id.split(":", 1)[-1]
    return rows


def inspect_json(image: Any, store: Any) -> dict[str, Any]:
    cfg = image.config
    inner = cfg.get("config") or {}
    return {
        "Id": image.id.split(":", 1)[-1],
        "Digest": image.manifest_digest,
        "RepoTags": image.names,
        "RepoDigests": [f"{n.rsplit(':', 1)[0]}@{image.manifest_digest}" for n in image.names],
        "Created": cfg.get("created"),
        "Config": inner,
        "Version": "",
        "Author": cfg.get("author", ""),
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
        "Size": image.size,
        "VirtualSize": image.size,
        "Labels": inner.get("Labels"),
        "Annotations": {},
        "ManifestType": image.media_type,
        "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
        "History": cfg.get("history") or [],
        "NamesHistory": image.names,
    }


# List-valued options and arguments as module-level values (ruff B008; typer reads them).
_TAGS = typer.Option([], "--tag", "-t", help="Name the image (repeatable)")
_BUILD_ARGS = typer.Option([], "--build-arg", help="ARG value: K=V, or K from the environment")
_SECRETS = typer.Option([], "--secret", help="id=ID,src=PATH")
_LABELS = typer.Option([], "--label", help="K=V added to the image")
_ANNOTATIONS = typer.Option([], "--annotation", help="K=V on the manifest")
_NEW_NAMES = typer.Argument(..., help="New names")
_OLD_NAMES = typer.Argument(None, help="Names to remove (default: all)")
_IMAGES = typer.Argument(..., help="Images")
_CHANGES = typer.Option([], "--change", "-c", help="A Dockerfile instruction to apply")


def register(app: typer.Typer) -> None:
    def build(
        ctx: typer.Context,
        context: str | None = typer.Argument(None, help="Context directory, or - for a "
                                                        "Containerfile on stdin"),
        file: str | None = typer.Option(None, "--file", "-f", help="Containerfile (- for stdin)"),
        tags: list[str] = _TAGS,
        build_args: list[str] = _BUILD_ARGS,
        target: str | None = typer.Option(None, "--target", help="Stage to build"),
        no_cache: bool = typer.Option(False, "--no-cache", help="Do not use cached layers"),
        pull: str = typer.Option("missing", "--pull",
                                 help="missing, always, never or newer (--pull alone: always)"),
        network: str | None = typer.Option(None, "--network", help="Network mode for RUN"),
        secrets: list[str] = _SECRETS,
        labels: list[str] = _LABELS,
        annotations: list[str] = _ANNOTATIONS,
        layers: str = typer.Option("true", "--layers", metavar="BOOL",
                                   help="One layer per step and the cache (default true)"),
        squash: bool = typer.Option(False, "--squash", help="The new layers as one"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the image ID"),
        iidfile: str | None = typer.Option(None, "--iidfile", help="Write the image ID here"),
        platform: str | None = typer.Option(None, "--platform", help="OS/ARCH[/VARIANT]"),
        compression: str | None = typer.Option(None, "--compression-format",
                                               help="gzip or zstd: pack the layers now "
                                                    "(default: gzip, when pushed or saved)"),
        timestamp: int | None = typer.Option(None, "--timestamp",
                                             help="Seconds since the epoch for every date"),
        tls_verify: str | None = typer.Option(None, "--tls-verify", metavar="BOOL"),
        fmt: str = typer.Option("oci", "--format", help="oci or docker (rl writes OCI)"),
    ) -> None:
        """Build an image from a Containerfile."""
        from rootless.cli.build_fast import build_cmd, build_options

        level = (ctx.obj or {}).get("log_level", "warning")
        opts = build_options({
            "file": file, "tags": list(tags), "build_args": list(build_args), "target": target,
            "no_cache": no_cache, "pull": pull, "network": network, "secrets": list(secrets),
            "labels": list(labels), "annotations": list(annotations), "layers": layers,
            "squash": squash, "quiet": quiet, "iidfile": iidfile, "platform": platform,
            "compression": compression, "timestamp": timestamp, "tls_verify": tls_verify,
            "format": fmt}, level)
        typer.echo(build_cmd(context, opts))

    def tag(
        image: str = typer.Argument(..., help="Image to name"),
        names: list[str] = _NEW_NAMES,
    ) -> None:
        """Add names to an image."""
        from rootless.build.builder import normalize_tag

        store = _store()
        found = _find(store, image)
        for name in names:
            store.tag(found, normalize_tag(name))

    def untag(
        image: str = typer.Argument(..., help="Image"),
        names: list[str] = _OLD_NAMES,
    ) -> None:
        """Remove names from an image (the image stays)."""
        from rootless.build.builder import normalize_tag

        store = _store()
        found = _find(store, image)
        wanted = [normalize_tag(n) for n in names] if names else list(found.names)
        for name in wanted:
            if name not in found.names:
                raise ImageError(f"{name}: tag not known for image {found.short_id}")
        store.untag(found, wanted)

    def history(
        image: str = typer.Argument(..., help="Image"),
        no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not truncate output"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the IDs"),
        human: bool = typer.Option(True, "--human", "-H", help="Sizes and dates for humans"),
        fmt: str | None = typer.Option(None, "--format", help="json"),
    ) -> None:
        """Show an image's history."""
        from rootless.cli.image_cmds import _created_epoch, human_ago, human_size

        store = _store()
        found = _find(store, image)
        rows = history_rows(found, store)
        if fmt == "json":
            typer.echo(json.dumps([{"id": r["id"], "created": r["created"],
                                    "createdBy": r["created_by"], "size": r["size"],
                                    "comment": r["comment"]} for r in rows], indent=4))
            return
        if quiet:
            for r in rows:
                typer.echo(r["id"] if no_trunc else r["id"][:12])
            return
        lines = [("ID", "CREATED", "CREATED BY", "SIZE", "COMMENT")]
        for r in rows:
            by = r["created_by"] if no_trunc or len(r["created_by"]) <= 45 else \
                r["created_by"][:42] + "..."
            lines.append((r["id"] if no_trunc else r["id"][:12],
                          human_ago(_created_epoch(r["created"])) if human else r["created"],
                          by, human_size(r["size"]) if human else str(r["size"]), r["comment"]))
        widths = [max(len(line[i]) for line in lines) for i in range(5)]
        for line in lines:
            typer.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())

    def image_inspect(
        images: list[str] = _IMAGES,
        fmt: str | None = typer.Option(None, "--format", "-f", help="json or a Go template"),
    ) -> None:
        """Show images' details as JSON."""
        store = _store()
        data = [inspect_json(_find(store, name), store) for name in images]
        if fmt and fmt != "json":
            from rootless.cli.image_cmds import render_template

            for item in data:
                flat = {k: json.dumps(v) if isinstance(v, (dict, list)) else v
                        for k, v in item.items()}
                for line in render_template(fmt, [flat]):
                    typer.echo(line)
            return
        typer.echo(json.dumps(data, indent=4))

    builder_app = typer.Typer(help="Manage the build cache.", no_args_is_help=True)

    def builder_prune(
        force: bool = typer.Option(False, "--force", "-f", help="Do not ask"),
        all_: bool = typer.Option(True, "--all", "-a", help="Every cache record (default)"),
    ) -> None:
        """Remove rl build's cache and the layers only it kept."""
        del all_, force
        store = _store()
        before = len(store.cache_records())
        result = store.prune(build_cache="all")
        for image_id in result.images:
            typer.echo(image_id.split(":", 1)[-1])
        typer.echo(f"Removed {before} cache records, {len(result.layers)} layers "
                   f"({result.bytes_freed} bytes)")

    def push(
        image: str = typer.Argument(..., help="Image to push"),
        destination: str | None = typer.Argument(None, help="REGISTRY/NAME[:TAG], oci:DIR[:TAG] "
                                                            "or docker-archive:FILE"),
        tls_verify: str | None = typer.Option(None, "--tls-verify", metavar="BOOL"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output"),
        digestfile: str | None = typer.Option(None, "--digestfile",
                                              help="Write the manifest digest here"),
    ) -> None:
        """Push an image to a registry, an OCI layout or a docker-archive."""
        from rootless.build.blobs import ensure_blobs
        from rootless.image.push import push_image

        paths = _paths()
        ensure_blobs(_store(), paths, image)
        insecure: list[str] = []
        if os.path.exists(paths.config_file_path):
            from rootless.config import load_config

            insecure = list(load_config(paths).insecure_registries)
        digest = push_image(image, destination, store=_store(), paths=paths,
                            tls_verify=None if tls_verify is None
                            else _bool("--tls-verify", tls_verify),
                            quiet=quiet, insecure_registries=insecure)
        if digestfile:
            with open(digestfile, "w") as f:
                f.write(digest)

    def commit(
        container: str = typer.Argument(..., help="Container name or ID"),
        image: str | None = typer.Argument(None, help="Name of the new image"),
        changes: list[str] = _CHANGES,
        message: str | None = typer.Option(None, "--message", "-m", help="Commit message"),
        author: str | None = typer.Option(None, "--author", "-a", help="Author"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the image ID"),
        pause: bool = typer.Option(False, "--pause", "-p", help="Accepted (rl does not pause)"),
    ) -> None:
        """Create an image from a container's changes."""
        from rootless.build.commit import commit_container
        from rootless.runtime.control import resolve

        paths = _paths()
        c = resolve(paths, container)
        del pause, quiet
        made = commit_container(paths, c, image, list(changes), message, author)
        typer.echo(made.id.split(":", 1)[-1])

    app.command("commit")(commit)
    app.command("push")(push)
    app.command("build", context_settings={"allow_interspersed_args": True})(build)
    app.command("tag")(tag)
    app.command("untag")(untag)
    app.command("history")(history)
    image_app = _sub(app, "image")
    if image_app is not None:
        image_app.command("build")(build)
        image_app.command("tag")(tag)
        image_app.command("untag")(untag)
        image_app.command("history")(history)
        image_app.command("inspect")(image_inspect)
        image_app.command("push")(push)
    app.add_typer(builder_app, name="builder")
    builder_app.command("prune")(builder_prune)


def _sub(app: typer.Typer, name: str) -> typer.Typer | None:
    for group in app.registered_groups:
        if group.name == name and group.typer_instance is not None:
            return group.typer_instance
    return None
