"""Image commands, with podman's names, flags and output: pull, images, rmi, image prune,
load, save (and `rl image ls|rm|pull|prune|load|save`).

Errors are raised as RlError; rootless.cli prints them. Heavy modules are imported inside the
commands so `rl --help` stays fast.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import typer

from rootless.errors import ImageError, RlError, UsageError


def _store() -> Any:
    from rootless.image.store import Store
    from rootless.paths import Paths

    return Store(Paths.from_env())


def containers_using(containers_dir: Path) -> dict[str, list[str]]:
    """image id -> container ids, from containers/*/config.json ("image_id")."""
    out: dict[str, list[str]] = {}
    try:
        entries = list(containers_dir.iterdir())
    except FileNotFoundError:
        return out
    for d in entries:
        try:
            data = json.loads((d / "config.json").read_text())
        except (OSError, ValueError):
            continue
        image_id = data.get("image_id") if isinstance(data, dict) else None
        if image_id:
            out.setdefault(str(image_id), []).append(d.name)
    return out


def _in_use(store: Any) -> Any:
    users = containers_using(store.paths.containers)
    return lambda image_id: image_id in users


def _tls(tls_verify: str | None, no_tls_verify: bool) -> bool | None:
    if no_tls_verify:
        return False
    if tls_verify is None:
        return None
    from rootless.cli.login_cmds import _parse_bool

    return _parse_bool("--tls-verify", tls_verify)


# -- formatting ----------------------------------------------------------------------------
def split_name(name: str) -> tuple[str, str]:
    """'reg/repo:tag' -> ('reg/repo', 'tag'); a digest-only name has tag '<none>'."""
    base = name.split("@", 1)[0]
    slash = base.rfind("/")
    colon = base.rfind(":")
    if colon > slash:
        return base[:colon], base[colon + 1:]
    return base, "<none>"


def human_size(size: int) -> str:
    """podman's SIZE: three significant digits, SI units (go-units HumanSizeWithPrecision)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"


def _created_epoch(created: str | None) -> float | None:
    if not created:
        return None
    from datetime import datetime

    text = re.sub(r"(\.\d{6})\d+", r"\1", created.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def human_ago(epoch: float | None, now: float | None = None) -> str:
    """go-units HumanDuration + ' ago', as podman's CREATED column."""
    if epoch is None:
        return "<unknown>"
    seconds = max(0.0, (now if now is not None else time.time()) - epoch)
    if seconds < 1:
        return "Less than a second ago"
    if seconds < 60:
        return f"{int(seconds)} seconds ago" if int(seconds) != 1 else "1 second ago"
    minutes = seconds / 60
    if minutes < 60:
        return "About a minute ago" if int(minutes) == 1 else f"{int(minutes)} minutes ago"
    hours = minutes / 60
    if hours < 48:
        return "About an hour ago" if int(round(hours)) == 1 else f"{int(round(hours))} hours ago"
    days = hours / 24
    if days < 14:
        return f"{int(days)} days ago"
    if days < 60:
        return f"{int(days / 7)} weeks ago"
    if days < 365 * 2:
        return f"{int(days / 30)} months ago"
    return f"{int(days / 365)} years ago"


def image_rows(images: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for image in sorted(images, key=lambda i: _created_epoch(i.created) or 0, reverse=True):
        epoch = _created_epoch(image.created)
        base = {
            "ID": image.short_id, "Id": image.id.split(":", 1)[-1], "Digest": image.manifest_digest,
            "Created": human_ago(epoch), "CreatedAt": image.created or "",
            "Size": human_size(image.size), "Names": image.names,
        }
        for name in image.names or ["<none>"]:
            repo, tag = split_name(name) if name != "<none>" else ("<none>", "<none>")
            rows.append({**base, "Repository": repo, "Tag": tag})
    return rows


def render_template(template: str, rows: list[dict[str, Any]]) -> list[str]:
    """A Go template of {{.Field}} lines; 'table ' prefix adds a header line."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    header = template.startswith("table")
    if header:
        template = template[len("table"):].lstrip()
    fields = re.compile(r"{{\s*\.(\w+)\s*}}")
    unknown = [f for f in fields.findall(template) if rows and f not in rows[0]]
    if unknown:
        raise UsageError(f"--format: unknown field .{unknown[0]}",
                         "fields: " + ", ".join(f".{k}" for k in (rows[0] if rows else {})))

    def fill(row: dict[str, Any]) -> str:
        return fields.sub(lambda m: str(row.get(m.group(1), "")), template)

    lines = [fill(r) for r in rows]
    if header:
        heading = fields.sub(lambda m: {"ID": "IMAGE ID"}.get(m.group(1), m.group(1).upper()),
                             template)
        lines.insert(0, heading)
    return lines


def images_json(images: list[Any]) -> list[dict[str, Any]]:
    out = []
    for image in images:
        epoch = _created_epoch(image.created)
        out.append({
            "Id": image.id.split(":", 1)[-1],
            "Digest": image.manifest_digest,
            "RepoTags": image.names,
            "Names": image.names,
            "Dangling": not image.names,
            "Created": int(epoch) if epoch is not None else 0,
            "CreatedAt": image.created or "",
            "Size": image.size,
            "Labels": (image.config.get("config") or {}).get("Labels"),
            "Layers": len(image.diff_ids),
        })
    return out


def table(rows: list[dict[str, Any]]) -> list[str]:
    cols = [("REPOSITORY", "Repository"), ("TAG", "Tag"), ("IMAGE ID", "ID"),
            ("CREATED", "Created"), ("SIZE", "Size")]
    widths = [max([len(h)] + [len(str(r[k])) for r in rows]) for h, k in cols]
    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()
    return [line([h for h, _ in cols])] + [line([str(r[k]) for _, k in cols]) for r in rows]


# -- commands ------------------------------------------------------------------------------
def pull_cmd(image: str, platform: str | None, tls_verify: bool | None, quiet: bool) -> str:
    import os

    from rootless.errors import ImageError
    from rootless.image.pull import pull_image, short_name_candidates
    from rootless.paths import Paths

    paths = Paths.from_env()
    names, insecure = [image], []
    if os.path.exists(paths.config_file_path):
        from rootless.config import load_config

        config = load_config(paths)
        names = short_name_candidates(image, config.search_registries)
        insecure = list(config.insecure_registries)
    last: ImageError | None = None
    for name in names:  # podman's short-name search: the first registry that has it
        try:
            pulled = pull_image(name, paths=paths, platform=platform, tls_verify=tls_verify,
                                quiet=quiet, insecure_registries=insecure)
            return pulled.id.split(":", 1)[-1]
        except ImageError as exc:
            last = exc
    assert last is not None
    raise last


def images_cmd(fmt: str | None, quiet: bool, all_: bool = False) -> list[str]:
    images = _store().list_images()
    if quiet:
        seen: list[str] = []
        for row in image_rows(images):
            if row["ID"] not in seen:
                seen.append(row["ID"])
        return seen
    if fmt == "json":
        return [json.dumps(images_json(images), indent=4)]
    rows = image_rows(images)
    if fmt:
        return render_template(fmt, rows)
    return table(rows)


def rmi_cmd(names: list[str], force: bool, all_: bool = False) -> list[str]:
    store = _store()
    in_use = _in_use(store)
    if all_:
        names = [i.id for i in store.list_images()]
    if not names:
        raise UsageError("rl rmi needs at least one image", "rl rmi IMAGE... (or --all)")
    lines: list[str] = []
    errors: list[RlError] = []
    for name in names:
        try:
            result = store.remove_image(name, force, in_use)
        except RlError as exc:
            errors.append(exc)
            continue
        lines += [f"Untagged: {n}" for n in result.untagged]
        lines += [f"Deleted: {d.split(':', 1)[-1]}" for d in result.deleted]
    if errors:
        for line in lines:
            typer.echo(line)
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ImageError(first.message + more, first.hint, exit_code=first.exit_code)
    return lines


def prune_cmd(all_: bool, force: bool) -> list[str]:
    store = _store()
    in_use = _in_use(store)
    if not force and sys.stdin.isatty():
        what = "all images not used by containers" if all_ else "all dangling images"
        if not typer.confirm(f"WARNING! This command removes {what}.\n"
                             "Are you sure you want to continue?", default=False):
            return []
    lines = []
    if all_:
        for image in store.list_images():
            if not in_use(image.id):
                result = store.remove_image(image.id, True, in_use)
                lines += [d.split(":", 1)[-1] for d in result.deleted]
    result = store.prune(in_use)
    lines += [i.split(":", 1)[-1] for i in result.images]
    return lines


def load_cmd(input_path: str | None, quiet: bool) -> list[str]:
    from rootless.image.archive import load_archive

    if input_path is None and sys.stdin.isatty():
        raise UsageError("rl load: no input", "use -i FILE, or pipe an archive into rl load")
    images = load_archive(input_path or "-", store=_store(), quiet=quiet)
    lines = []
    for image in images:
        for name in image.names or [image.id]:
            lines.append(f"Loaded image: {name}")
    return lines


def save_cmd(image: str, output: str | None, fmt: str) -> None:
    from rootless.image.archive import save_archive

    if not output:
        raise UsageError("rl save needs -o FILE", "rl save -o alpine.tar alpine")
    from rootless.build.blobs import ensure_blobs

    store = _store()
    ensure_blobs(store, store.paths, image)  # an image rl built may have no blobs yet
    found = store.lookup(image)
    if not found:
        raise ImageError(f"{image}: image not known")
    local, by_name = found
    save_archive(local, output, store=store, fmt=fmt, name=by_name)


_RMI_NAMES = typer.Argument(None, help="Images to remove (names or IDs)")


def register(app: typer.Typer) -> None:
    image_app = typer.Typer(help="Manage images.", no_args_is_help=True)
    app.add_typer(image_app, name="image")

    def pull(
        image: str = typer.Argument(..., help="Image reference, e.g. alpine or quay.io/x/y:1"),
        platform: str | None = typer.Option(None, "--platform", help="OS/ARCH[/VARIANT]"),
        tls_verify: str | None = typer.Option(None, "--tls-verify", metavar="BOOL",
                                              help="Require HTTPS and verify certificates."),
        no_tls_verify: bool = typer.Option(False, "--no-tls-verify",
                                           help="Same as --tls-verify=false."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    ) -> None:
        """Pull an image from a registry."""
        typer.echo(pull_cmd(image, platform, _tls(tls_verify, no_tls_verify), quiet))

    def images(
        fmt: str | None = typer.Option(None, "--format", help="json or a Go template"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Image IDs only."),
        all_: bool = typer.Option(False, "--all", "-a", help="Accepted for podman compatibility."),
    ) -> None:
        """List images in local storage."""
        for line in images_cmd(fmt, quiet, all_):
            typer.echo(line)

    def rmi(
        names: list[str] = _RMI_NAMES,
        force: bool = typer.Option(False, "--force", "-f",
                                   help="Remove by ID with several names; untag in-use images."),
        all_: bool = typer.Option(False, "--all", "-a", help="Remove every image."),
    ) -> None:
        """Remove images."""
        for line in rmi_cmd(list(names or []), force, all_):
            typer.echo(line)

    def prune(
        all_: bool = typer.Option(False, "--all", "-a",
                                  help="Remove every image no container uses, not only dangling."),
        force: bool = typer.Option(False, "--force", "-f", help="Do not ask for confirmation."),
    ) -> None:
        """Remove dangling images and the layers and blobs nothing refers to."""
        for line in prune_cmd(all_, force):
            typer.echo(line)

    def load(
        input_path: str | None = typer.Option(None, "--input", "-i",
                                              help="Archive to read (default: stdin)"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Less output."),
    ) -> None:
        """Load images from a docker-archive or an OCI layout (tar or directory)."""
        for line in load_cmd(input_path, quiet):
            typer.echo(line)

    def save(
        image: str = typer.Argument(..., help="Image to save"),
        output: str | None = typer.Option(None, "--output", "-o", help="File to write"),
        fmt: str = typer.Option("docker-archive", "--format",
                                help="docker-archive or oci-archive"),
    ) -> None:
        """Save an image to a docker-archive or oci-archive tar."""
        save_cmd(image, output, fmt)

    app.command("pull")(pull)
    app.command("images")(images)
    app.command("rmi")(rmi)
    app.command("load")(load)
    app.command("save")(save)
    image_app.command("pull")(pull)
    image_app.command("ls")(images)
    image_app.command("list")(images)
    image_app.command("rm")(rmi)
    image_app.command("prune")(prune)
    image_app.command("load")(load)
    image_app.command("save")(save)
