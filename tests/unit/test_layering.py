"""The packages import only downward, and no two packages import each other (docs/architecture.md).

Every import counts: at module level, inside functions (the lazy imports that keep `rl run`
fast) and under TYPE_CHECKING, because each is a dependency of the code even when it is not
paid for at start-up.
"""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Bottom first. A module may import units of its own layer or a lower one, never of a higher
# layer; and no two units may import each other, directly or through others.
LAYERS: list[dict[str, tuple[str, ...]]] = [
    {"kernel": ("rootless.kernel",), "idmap": ("idmap",)},
    # Plain data and settings: errors, file reading, where things live, config.toml, the option
    # table and the RunSpec it becomes. ("rootless" is the package itself: __version__.)
    {"base": ("rootless", "rootless.errors", "rootless.fileio", "rootless.jsonc", "rootless.paths",
              "rootless.config", "rootless.runopts", "rootless.limits", "rootless.spec")},
    {"primitives": ("rootless.primitives",)},
    {"image": ("rootless.image",), "network": ("rootless.network",),
     "cgroups": ("rootless.cgroups",), "security": ("rootless.security",),
     "doctor": ("rootless.doctor",)},
    {"runtime": ("rootless.runtime",)},
    # The builder is a front end (its RUN steps are launches), used by cli/.
    {"build": ("rootless.build",)},
    {"frontend": ("rootless.cli", "rootless.main", "rootless.ocimain", "rootless.runspec",
                  "rootless.info")},
]

# Narrower than the order: what the bottom units may import at all (besides themselves).
ONLY: dict[str, tuple[str, ...]] = {
    "kernel": (),
    "idmap": (),
    "primitives": ("rootless.kernel", "idmap", "rootless.errors", "rootless.paths",
                   "rootless.fileio", "rootless.jsonc"),
}

PROJECT = ("rootless", "idmap")


def unit_of(module: str) -> str | None:
    """The declared unit of a dotted module name: the longest declared prefix. The bare
    "rootless" matches only itself, so a new package is never silently put in base."""
    best: tuple[int, str] | None = None
    for layer in LAYERS:
        for unit, prefixes in layer.items():
            for prefix in prefixes:
                hit = module == prefix or (prefix != "rootless" and module.startswith(prefix + "."))
                if hit and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), unit)
    return best[1] if best else None


def layer_of(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the source, wherever it is, relative ones
    resolved. `from a import b` yields a.b as well as a (b may be a module)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if is_package else -1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in out if name.split(".")[0] in PROJECT]


def project_imports() -> list[tuple[str, str, int, str]]:
    """(file, module, line, imported module) for every project module."""
    rows = []
    for top in PROJECT:
        for path in sorted((REPO / top).rglob("*.py")):
            module = module_name(path)
            for line, target in imports_of(path.read_text(), module, path.name == "__init__.py"):
                rows.append((str(path.relative_to(REPO)), module, line, target))
    return rows


def test_the_parser_sees_lazy_relative_and_type_checking_imports():
    source = ("import os\nfrom . import sibling\nTYPE_CHECKING = False\nif TYPE_CHECKING:\n"
              "    from rootless.paths import Paths\ndef f():\n    import rootless.runtime.state\n")
    got = imports_of(source, "rootless.image.store", is_package=False)
    assert (2, "rootless.image.sibling") in got
    assert (5, "rootless.paths") in got
    assert (7, "rootless.runtime.state") in got
    assert all(not name.startswith("os") for _, name in got)


def test_every_module_belongs_to_a_declared_unit():
    missing = sorted({m for top in PROJECT for m in map(module_name, (REPO / top).rglob("*.py"))
                      if unit_of(m) is None})
    assert not missing, f"declare these in LAYERS (tests/unit/test_layering.py): {missing}"


def test_imports_go_downward_only():
    wrong = []
    seen = set()
    for file, module, line, target in project_imports():
        src, dst = unit_of(module), unit_of(target)
        if src is None or dst is None or src == dst or (file, line, dst) in seen:
            continue
        seen.add((file, line, dst))
        if src in ONLY:
            allowed = ONLY[src]
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                wrong.append((file, line, f"{src} may import only {allowed or 'itself'}, "
                                          f"not {target}"))
                continue
        if layer_of(dst) > layer_of(src):
            wrong.append((file, line, f"{target} ({dst}) is above {module} ({src})"))
    assert not wrong, "\n".join(f"{f}:{n}: {text}" for f, n, text in sorted(wrong))


def test_no_import_cycle_between_units():
    edges: dict[str, dict[str, str]] = {}
    for file, module, line, target in project_imports():
        src, dst = unit_of(module), unit_of(target)
        if src and dst and src != dst:
            edges.setdefault(src, {}).setdefault(dst, f"{file}:{line} imports {target}")
    # Depth-first search for a back edge; report the cycle with one import for each arrow.
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> list[str] | None:
        if unit in path:
            return path[path.index(unit):] + [unit]
        if unit in done:
            return None
        for nxt in sorted(edges.get(unit, {})):
            cycle = visit(nxt, path + [unit])
            if cycle:
                return cycle
        done.add(unit)
        return None

    for unit in sorted(edges):
        cycle = visit(unit, [])
        if cycle:
            arrows = [edges[a][b] for a, b in pairwise(cycle)]
            raise AssertionError(" -> ".join(cycle) + "\n" + "\n".join(arrows))
