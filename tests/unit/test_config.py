"""config.toml and profiles: layering, list merging, `clear`, and errors naming file/key/line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rootless.config import load_config, resolve, run_settings
from rootless.errors import ConfigError
from rootless.paths import Paths
from rootless.runopts import parse_run_args
from rootless.runspec import build_run_spec


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")
    p.profiles.mkdir(parents=True)
    return p


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def profile(paths: Paths, name: str, text: str) -> Path:
    return write(paths.profiles / f"{name}.toml", text)


def test_no_files_give_no_settings(paths: Paths) -> None:
    assert run_settings(paths, []) == {}
    cfg = load_config(paths)
    assert not cfg.exists and cfg.search_registries == ["docker.io"] and cfg.storage is None


def test_precedence_config_then_profiles_in_order(paths: Paths) -> None:
    write(paths.config_file, """
        [run]
        network = "none"
        pids_limit = 100
        env = ["A=config"]
    """)
    profile(paths, "one", 'network = "pasta"\nenv = ["B=one"]\ntimeout = 5\n')
    profile(paths, "two", 'timeout = 9\nenv = ["C=two"]\n')
    values = run_settings(paths, ["one", "two"])
    assert values["network"] == "pasta"
    assert values["pids_limit"] == 100
    assert values["timeout"] == 9
    assert values["env"] == ["A=config", "B=one", "C=two"]


def test_flags_win_and_cli_lists_add(paths: Paths, tmp_path: Path) -> None:
    profile(paths, "p", f'network = "none"\nenv = ["A=1"]\nvolumes = ["{tmp_path}:/data"]\n')
    settings = run_settings(paths, ["p"])
    parsed = parse_run_args(["--network", "host", "-e", "B=2", "--rootfs", str(tmp_path), "true"])
    spec = build_run_spec(parsed, settings, environ={})
    assert spec.network == "host"
    assert spec.env == [("A", "1"), ("B", "2")]
    assert [v.destination for v in spec.volumes] == ["/data"]


def test_clear_drops_inherited_list(paths: Paths) -> None:
    write(paths.config_file, '[run]\nenv = ["A=1"]\npublish = ["8080:80"]\n')
    profile(paths, "clean", 'clear = ["env"]\nenv = ["ONLY=1"]\n')
    profile(paths, "empty", 'clear = ["publish"]\n')
    values = run_settings(paths, ["clean", "empty"])
    assert values["env"] == ["ONLY=1"]
    assert "publish" not in values


def test_extends_parent_first_and_applied_once(paths: Paths) -> None:
    profile(paths, "base", 'env = ["BASE=1"]\nnetwork = "none"\n')
    profile(paths, "a", 'extends = "base"\nenv = ["A=1"]\n')
    profile(paths, "b", 'extends = ["base"]\nnetwork = "host"\n')
    values, places, layers = resolve(paths, ["a", "b"], env={})
    assert [layer.name for layer in layers] == ["profile base", "profile a", "profile b"]
    assert values["env"] == ["BASE=1", "A=1"]
    assert values["network"] == "host"
    assert places["network"].endswith("b.toml, line 2")
    assert places["env"][0].endswith("base.toml, line 1")


def test_extends_cycle_is_an_error(paths: Paths) -> None:
    profile(paths, "x", 'extends = "y"\n')
    profile(paths, "y", 'extends = "z"\n')
    profile(paths, "z", 'extends = "x"\n')
    with pytest.raises(ConfigError) as err:
        run_settings(paths, ["x"])
    assert "x -> y -> z -> x" in err.value.message
    assert err.value.exit_code == 125


def test_missing_profile_names_file_and_suggests(paths: Paths) -> None:
    profile(paths, "ci", 'remove = true\n')
    with pytest.raises(ConfigError) as err:
        run_settings(paths, ["cj"])
    assert "profile 'cj' not found" in err.value.message
    assert str(paths.profiles / "cj.toml") in err.value.message
    assert "did you mean 'ci'" in (err.value.hint or "")


def test_missing_parent_names_the_extending_file(paths: Paths) -> None:
    path = profile(paths, "child", '# a comment\nextends = "gone"\n')
    with pytest.raises(ConfigError) as err:
        run_settings(paths, ["child"])
    assert f"{path}, line 2" in err.value.message
    assert "profile 'gone' not found" in err.value.message


def test_unknown_key_gets_closest_valid_key_and_line(paths: Paths) -> None:
    path = profile(paths, "p", 'network = "none"\n\nread_onyl = true\n')
    with pytest.raises(ConfigError) as err:
        run_settings(paths, ["p"])
    assert err.value.message == f"{path}, line 3: unknown key 'read_onyl'"
    assert err.value.hint == "did you mean 'read_only'?"


@pytest.mark.parametrize("key,guess", [("ports", "publish"), ("read-only", "read_only"),
                                       ("pids-limit", "pids_limit"), ("environment", "env"), ("netwrk", "network")])
def test_synonyms_and_spellings(paths: Paths, key: str, guess: str) -> None:
    profile(paths, "p", f'"{key}" = 1\n')
    with pytest.raises(ConfigError) as err:
        run_settings(paths, ["p"])
    assert err.value.hint == f"did you mean '{guess}'?"


@pytest.mark.parametrize("text,needle", [
    ('timeout = "10"', "expected a whole number"),
    ('read_only = "yes"', "expected true or false"),
    ('env = "A=1"', "expected a list of strings"),
    ('memory = "lots"', "not a size"),
    ('memory = "1m"', "6m minimum"),
    ('publish = ["70000:80"]', "port 70000 is outside"),
    ('publish = ["80:80/icmp"]', "not [IP:][HOSTPORT:]PORT"),
    ('pull = "sometimes"', "is not one of"),
    ('volumes = ["/a:relative"]', "must be absolute"),
    ('volumes = ["/a:/b:rx"]', "unknown volume option"),
    ('pids_limit = 0', "not a positive number"),
    ('timeout = -1', "negative"),
    ('cpus = "fast"', "positive number of CPUs"),
    ('clear = ["network"]', "not a list key"),
    ('workdir = "src"', "absolute path"),
])
def test_bad_values_name_file_key_line(paths: Paths, text: str, needle: str) -> None:
    path = profile(paths, "p", f"# first\n{text}\n")
    with pytest.raises(ConfigError) as err:
        run_settings(paths, ["p"])
    key = text.split()[0]
    assert err.value.message.startswith(f"{path}, line 2: invalid value for '{key}'")
    assert needle in err.value.message


def test_toml_syntax_error_has_line(paths: Paths) -> None:
    path = profile(paths, "p", 'network = "none"\nenv = [\n"A=1",\n  oops\n]\n')
    with pytest.raises(ConfigError) as err:
        run_settings(paths, ["p"])
    assert err.value.message.startswith(f"{path}, line 4: invalid TOML")


def test_numbers_for_sizes_become_strings(paths: Paths) -> None:
    profile(paths, "p", 'memory = 67108864\ncpus = 0.5\n')
    assert run_settings(paths, ["p"]) == {"memory": "67108864", "cpus": "0.5"}


def test_variables_expand_and_unset_ones_fail(paths: Paths, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PWD", raising=False)
    monkeypatch.setenv("RL_TEST_VALUE", "v")
    profile(paths, "dev", 'volumes = ["${PWD}:${PWD}"]\nworkdir = "${PWD}"\nenv = ["X=${RL_TEST_VALUE}"]\n')
    values = run_settings(paths, ["dev"])
    assert values["volumes"] == [f"{tmp_path}:{tmp_path}"]
    assert values["workdir"] == str(tmp_path) and values["env"] == ["X=v"]
    profile(paths, "bad", 'env = ["X=${RL_SURELY_UNSET_VARIABLE}"]\n')
    with pytest.raises(ConfigError, match="RL_SURELY_UNSET_VARIABLE"):
        run_settings(paths, ["bad"])


def test_config_tables(paths: Paths) -> None:
    write(paths.config_file, """
        [storage]
        path = "~/rl-store"

        [registries]
        search = ["quay.io", "docker.io"]
        insecure = ["localhost:5000"]
        credentials_file = "/etc/rl/auth.json"
        mirrors = { "docker.io" = ["mirror.example:5000"] }
    """)
    cfg = load_config(paths, env={"HOME": "/home/u"})
    assert cfg.exists
    assert cfg.storage is not None and cfg.storage.name == "rl-store" and cfg.storage.is_absolute()
    assert cfg.search_registries == ["quay.io", "docker.io"]
    assert cfg.insecure_registries == ["localhost:5000"]
    assert cfg.mirrors == {"docker.io": ["mirror.example:5000"]}
    assert str(cfg.credentials_file) == "/etc/rl/auth.json"


@pytest.mark.parametrize("text,needle,hint", [
    ("[registry]\nsearch = []\n", "unknown table [registry]", "did you mean [registries]?"),
    ("[registries]\nserach = []\n", "line 2: unknown key 'registries.serach'", "did you mean 'search'?"),
    ("[run]\nnetwrk = \"none\"\n", "line 2: unknown key 'run.netwrk'", "did you mean 'network'?"),
    ("[storage]\npath = \"relative\"\n", "line 2: invalid value for 'storage.path'", None),
    ("[run]\nextends = \"x\"\n", "unknown key 'run.extends'", None),
])
def test_config_errors(paths: Paths, text: str, needle: str, hint: str | None) -> None:
    write(paths.config_file, text)
    with pytest.raises(ConfigError) as err:
        load_config(paths)
    assert needle in err.value.message and str(paths.config_file) in err.value.message
    if hint:
        assert err.value.hint == hint


def test_example_profiles_are_valid(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    for src in sorted((root / "profiles").glob("*.toml")):
        (paths.profiles / src.name).write_text(src.read_text())
    (paths.config_file).write_text((root / "config.toml").read_text())
    names = [p.stem for p in (root / "profiles").glob("*.toml")]
    assert {"ci", "dev", "untrusted"} <= set(names)
    for name in names:
        run_settings(paths, [name])
    assert load_config(paths).exists


def test_parse_cache_follows_file_changes(paths: Paths) -> None:
    path = profile(paths, "p", 'hostname = "one"\n')
    assert run_settings(paths, ["p"]) == {"hostname": "one"}
    cache = paths.runtime / "toml-cache.json"
    assert str(path) in cache.read_text()
    assert run_settings(paths, ["p"]) == {"hostname": "one"}  # served from the cache
    path.write_text('hostname = "a-longer-two"\n')
    assert run_settings(paths, ["p"]) == {"hostname": "a-longer-two"}
    path.write_text('hostnme = "x"\n')
    with pytest.raises(ConfigError, match="line 1: unknown key 'hostnme'"):
        run_settings(paths, ["p"])
    cache.write_text("not json")
    path.write_text('hostname = "three"\n')
    assert run_settings(paths, ["p"]) == {"hostname": "three"}


def test_configured_paths(paths: Paths, tmp_path: Path) -> None:
    from rootless.config import configured_paths

    assert configured_paths(paths, env={}) is paths
    write(paths.config_file, f'[storage]\npath = "{tmp_path / "store"}"\n')
    moved = configured_paths(paths, env={})
    assert moved.data == tmp_path / "store" and moved.config == paths.config
    assert configured_paths(paths, env={"RL_STORAGE": "/x"}) is paths
