"""`rl profile list|show|new` and `rl config show`: the per-user settings rl run starts from.

Errors are ConfigErrors (exit 125) that rootless.cli prints; data goes to stdout.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer

from rootless.errors import ConfigError, UsageError

_FORMATS = ("table", "json")


def _paths() -> Any:
    from rootless.paths import Paths

    return Paths.from_env()


def _check_format(fmt: str) -> None:
    if fmt not in _FORMATS:
        raise UsageError(f"--format {fmt!r}: use table or json")


def toml_value(value: Any) -> str:
    """A TOML literal for a str/int/bool/list value (json's escaping is valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def list_profiles(fmt: str = "table", quiet: bool = False) -> str:
    from rootless.config.layers import available_profiles, read_profile

    _check_format(fmt)
    paths = _paths()
    rows = []
    for name in available_profiles(paths.profiles):
        row: dict[str, Any] = {"name": name, "path": str(paths.profiles / f"{name}.toml")}
        try:
            layer = read_profile(paths.profiles, name, dict(os.environ))
            row.update(extends=layer.extends, description=layer.description, error=None)
        except ConfigError as exc:
            row.update(extends=[], description="", error=exc.message)
        rows.append(row)
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if quiet:
        return "".join(f"{r['name']}\n" for r in rows)
    if not rows:
        return ""
    width = max(4, *(len(r["name"]) for r in rows))
    out = [f"{'NAME':<{width}}  {'EXTENDS':<12}  DESCRIPTION"]
    for r in rows:
        text = f"INVALID: {r['error']}" if r["error"] else r["description"]
        out.append(f"{r['name']:<{width}}  {','.join(r['extends']) or '-':<12}  {text}")
    return "\n".join(out) + "\n"


def show_profiles(names: list[str], fmt: str = "table", all_keys: bool = False) -> str:
    from rootless.config import resolve
    from rootless.config.schema import RUN_KEYS
    from rootless.spec import RunSpec

    _check_format(fmt)
    values, places, layers = resolve(_paths(), names)
    settings: dict[str, Any] = {}
    for key in sorted(RUN_KEYS):
        if key in values:
            settings[key] = {"value": values[key], "from": places[key]}
        elif all_keys:
            default = RunSpec._defaults.get(key)
            settings[key] = {"value": default, "from": "built-in default"}
    if fmt == "json":
        return json.dumps({"profiles": names, "layers": [str(layer.path) for layer in layers],
                           "settings": settings}, indent=2) + "\n"
    flags = " ".join(f"--profile {n}" for n in names)
    out = [f"# the settings of 'rl run {flags}', lowest layer first:"]
    out += [f"#   {layer.name}: {layer.path}" for layer in layers]
    out.append("# command-line flags win over all of these; lists given there are added.")
    for key, item in settings.items():
        value, origin = item["value"], item["from"]
        if value is None:
            out.append(f"# {key} is unset".ljust(44) + f"# {origin}")
        elif isinstance(value, list) and isinstance(origin, list) and value:
            out.append(f"{key} = [")
            out += [f"  {toml_value(v)},".ljust(42) + f"  # {o}" for v, o in zip(value, origin, strict=True)]
            out.append("]")
        else:
            out.append(f"{key} = {toml_value(value)}".ljust(42) + f"  # {origin}")
    return "\n".join(out) + "\n"


def new_profile(name: str, force: bool = False) -> str:
    from rootless.config.layers import profile_file
    from rootless.config.template import profile_template

    paths = _paths()
    path = profile_file(paths.profiles, name)
    if path.exists() and not force:
        raise ConfigError(f"profile '{name}' already exists: {path}",
                          hint="edit it, or use --force to overwrite it with the template")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(profile_template(name), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    return f"{path}\n"


def show_config(fmt: str = "table") -> str:
    from rootless.config import load_config

    _check_format(fmt)
    paths = _paths()
    config = load_config(paths)
    data = config.as_dict()
    data["paths"] = {"storage": str(paths.data), "runtime": str(paths.runtime),
                     "profiles": str(paths.profiles), "auth_file": str(paths.auth_file)}
    data["places"] = dict(config.places)
    if config.run:
        data["places"].update({f"run.{k}": v for k, v in config.run.places.items()})
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    state = "" if config.exists else " (does not exist: built-in defaults)"
    out = [f"# {config.path}{state}",
           f"# storage in use: {paths.data}" + (" (RL_STORAGE)" if os.environ.get("RL_STORAGE")
                                                else ""),
           f"# runtime state: {paths.runtime}", f"# profiles: {paths.profiles}", ""]

    def line(table: str, key: str, value: Any) -> str:
        origin = data["places"].get(f"{table}.{key}", "built-in default")
        shown = "# " + key + " is unset" if value is None else f"{key} = {toml_value(value)}"
        return shown.ljust(42) + f"  # {origin}"

    out += ["[storage]", line("storage", "path", data["storage"]), "", "[registries]"]
    registries = data["registries"]
    for key in ("search", "insecure", "credentials_file"):
        out.append(line("registries", key, registries[key]))
    mirrors = ", ".join(f"{json.dumps(k)} = {toml_value(v)}"
                        for k, v in registries["mirrors"].items())
    out.append(line("registries", "mirrors", None) if not registries["mirrors"]
               else f"mirrors = {{ {mirrors} }}".ljust(42)
               + f"  # {data['places'].get('registries.mirrors')}")
    out += ["", "[run]"]
    out += [line("run", k, v) for k, v in data["run"].items()]
    return "\n".join(out) + "\n"


def register(app: typer.Typer) -> None:
    profile_app = typer.Typer(help="Manage rl run profiles (~/.config/rootless/profiles/).",
                              no_args_is_help=True)
    config_app = typer.Typer(help="Show rl's configuration (~/.config/rootless/config.toml).",
                             no_args_is_help=True)
    app.add_typer(profile_app, name="profile")
    app.add_typer(config_app, name="config")

    @profile_app.command("list")
    def profile_list(
        fmt: str = typer.Option("table", "--format", help="table or json."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Names only."),
    ) -> None:
        """List your profiles, what each extends and its description.

        Examples:

          rl profile list

          rl profile list --format json
        """
        typer.echo(list_profiles(fmt, quiet), nl=False)

    @profile_app.command("show")
    def profile_show(
        names: Annotated[list[str], typer.Argument(metavar="NAME", help="Profiles, applied in this order.")],
        fmt: str = typer.Option("table", "--format", help="table or json."),
        all_keys: bool = typer.Option(False, "--all", "-a",
                                      help="Also list the keys left at built-in defaults."),
    ) -> None:
        """Show the effective settings of 'rl run --profile NAME...', each with the file and
        line it comes from.

        Examples:

          rl profile show ci

          rl profile show base ci --all

          rl profile show dev --format json
        """
        typer.echo(show_profiles(names, fmt, all_keys), nl=False)

    @profile_app.command("new")
    def profile_new(
        name: str = typer.Argument(..., help="Name of the profile (file NAME.toml)."),
        force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing file."),
    ) -> None:
        """Write a commented template listing every key to profiles/NAME.toml and print its
        path.

        Examples:

          rl profile new ci

          $EDITOR "$(rl profile new web)"
        """
        typer.echo(new_profile(name, force), nl=False)

    @config_app.command("show")
    def config_show(
        fmt: str = typer.Option("table", "--format", help="table or json."),
    ) -> None:
        """Show config.toml's effective values, each with the line it comes from, and the
        directories rl uses.

        Examples:

          rl config show

          rl config show --format json
        """
        typer.echo(show_config(fmt), nl=False)
