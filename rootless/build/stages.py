"""The stage graph of a multi-stage Containerfile.

    FROM image [AS name]        a stage on an image, `scratch` (no layers) or an earlier stage
    COPY --from=name|index|image  and  RUN --mount=…,from=…   other stages a stage needs
    --target NAME               the stage that becomes the image (default: the last one)

Only the target and the stages it needs are built (podman's --skip-unused-stages default).
Everything here is decided from the text and the build args alone, before anything runs, so
a missing target, a stage that refers to itself or a later stage by number, a blank base
name, a source outside the context, a COPY without a destination or a RUN --mount of an
unknown type fails with its file and line at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from rootless.build.args import ArgScope, platform_args
from rootless.build.errors import BuildError
from rootless.build.parser import Containerfile, Instruction
from rootless.build.shellwords import Lexer, split_unquoted

_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")


@dataclass
class Stage:
    index: int
    name: str | None
    base: str  # an image reference, "scratch", or an earlier stage's name
    base_stage: int | None
    platform: str | None
    from_ins: Instruction
    instructions: list[Instruction] = field(default_factory=list)
    deps: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        return self.name or str(self.index)


@dataclass
class StageGraph:
    stages: list[Stage]
    meta: dict[str, str]  # meta ARG values (and the platform args)
    target: int
    order: list[int]  # the stages to build, in file order

    def find(self, ref: str, before: int | None = None) -> Stage | None:
        """The stage `ref` names (a name, case-insensitive, or an index), if any."""
        limit = len(self.stages) if before is None else before
        if ref.isdigit():
            i = int(ref)
            return self.stages[i] if i < limit else None
        low = ref.lower()
        return next((s for s in self.stages[:limit] if s.name == low), None)


def declare_args(ins: Instruction, scope: ArgScope, lexer: Lexer, env: dict[str, str]) -> None:
    """Apply one ARG instruction (`ARG a=1 b`) to scope; env is what defaults substitute with."""
    for word in split_unquoted(ins.args, lexer.escape):
        name, eq, default = word.partition("=")
        value = None
        if eq:
            try:
                value = lexer.process_word(default, env)
            except BuildError as exc:
                raise ins.error(exc.reason, exc.hint) from None
        try:
            scope.declare(name, value)
        except BuildError as exc:
            raise ins.error(exc.reason) from None
        if name in scope.values:
            env[name] = scope.values[name]


def plan_stages(cf: Containerfile, build_args: dict[str, str], target: str | None,
                consumed: set[str], platform: str | None = None,
                context: str | None = None) -> StageGraph:
    lexer = Lexer(cf.escape)
    auto = platform_args(platform)
    meta_scope = ArgScope(build_args, auto, consumed)
    meta_env = dict(auto)
    stages: list[Stage] = []
    for ins in cf.instructions:
        if ins.cmd == "FROM":
            stages.append(_stage(ins, len(stages), stages, lexer, meta_env))
        elif not stages:
            declare_args(ins, meta_scope, lexer, meta_env)
        else:
            stages[-1].instructions.append(ins)
    meta = dict(auto)
    meta.update(meta_scope.values)
    graph = StageGraph(stages, meta, len(stages) - 1, [])
    if target:
        found = graph.find(target)
        if found is None or target.isdigit():
            raise BuildError(f"target stage {target!r} could not be found",
                             stages[0].from_ins.file,
                             hint="name a stage with FROM … AS NAME and give that NAME")
        graph.target = found.index
    for stage in stages:
        _dependencies(graph, stage, lexer, build_args, consumed, context)
    graph.order = sorted(_needed(graph, graph.target))
    return graph


def _stage(ins: Instruction, index: int, earlier: list[Stage], lexer: Lexer,
           meta_env: dict[str, str]) -> Stage:
    words = split_unquoted(ins.args, lexer.escape)
    name = None
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise ins.error(f"invalid stage name {words[2]!r}: use letters, digits, '-', '_' "
                            "and '.', starting with a letter")
        if any(s.name == name for s in earlier):
            raise ins.error(f"duplicate stage name {name!r}")
    elif len(words) != 1:
        raise ins.error("FROM takes an image and optionally 'AS name'")
    try:
        base = lexer.process_word(words[0], meta_env)
        platform = ins.flag("platform")
        if platform:
            platform = lexer.process_word(platform, meta_env)
    except BuildError as exc:
        raise ins.error(exc.reason, exc.hint) from None
    if not base:
        raise ins.error(f"base name ({words[0]}) should not be blank",
                        "give the ARG a value with --build-arg or a default")
    low = base.lower()
    base_stage = next((s.index for s in earlier if s.name == low), None)
    return Stage(index, name, base, base_stage, platform or None, ins)


def _dependencies(graph: StageGraph, stage: Stage, lexer: Lexer, build_args: dict[str, str],
                  consumed: set[str], context: str | None) -> None:
    if stage.base_stage is not None:
        stage.deps.add(stage.base_stage)
    scope = ArgScope(build_args, graph.meta, consumed)
    env: dict[str, str] = {}
    for ins in stage.instructions:
        if ins.cmd == "ARG":
            declare_args(ins, scope, lexer, env)
            continue
        refs: list[str] = []
        if ins.cmd == "COPY" and ins.flag("from"):
            refs.append(ins.flag("from") or "")
        if ins.cmd == "RUN":
            for mount in ins.flags.get("mount", []):
                for part in (mount or "").split(","):
                    key, _, value = part.partition("=")
                    if key.strip() == "from" and value:
                        refs.append(value)
        for ref in refs:
            try:
                ref = lexer.process_word(ref, env)
            except BuildError:
                continue  # needs the base image's ENV: resolved when the step runs
            if ref.isdigit() and int(ref) >= stage.index:
                raise ins.error(f"invalid from flag value {ref}: refers to the current or a "
                                "later stage", "stages can use only earlier stages")
            found = graph.find(ref, before=stage.index)
            if found is not None:
                stage.deps.add(found.index)
            elif ref.lower() == stage.name:
                raise ins.error(f"stage {ref!r} cannot copy from itself")
        if ins.cmd == "RUN":
            from rootless.build.run import parse_mounts

            parse_mounts(ins)  # an unknown mount type or a missing target fails now
        if ins.cmd in ("COPY", "ADD"):
            words = ins.json if ins.json is not None else split_unquoted(ins.args, lexer.escape)
            if len(words) < 2 and not ins.heredocs:
                raise ins.error(f"{ins.cmd} requires at least two arguments, but only one was "
                                "provided. Destination could not be determined")
        if ins.cmd in ("COPY", "ADD") and not ins.flag("from"):
            _check_sources(ins, lexer, env, context)


def _check_sources(ins: Instruction, lexer: Lexer, env: dict[str, str],
                   context: str | None) -> None:
    """A source that climbs out of the context is refused now (Docker: 'forbidden path
    outside the build context'); one that is missing is found when the step runs."""
    words = ins.json if ins.json is not None else split_unquoted(ins.args, lexer.escape)
    sources = words[:-1]
    if ins.heredocs:
        names = {h.name for h in ins.heredocs}
        sources = [s for s in sources if s.lstrip("<-").strip("'\"") not in names]
    for src in sources:
        try:
            src = lexer.process_word(src, env)
        except BuildError:
            continue
        if ins.cmd == "ADD" and re.match(r"[a-z][a-z0-9+.-]*://", src):
            continue
        if context is None:
            raise ins.error(f"{ins.cmd} {src}: there is no build context (the Containerfile came "
                            "from stdin)", "give a context directory instead of '-'")
        # lexical, as Docker decides it: an absolute source is relative to the context
        clean = "." if src.startswith("/") else os.path.normpath(src)
        if clean == ".." or clean.startswith("../"):
            raise ins.error(f"forbidden path outside the build context: {src}")


def _needed(graph: StageGraph, index: int) -> set[int]:
    out = {index}
    for dep in graph.stages[index].deps:
        out |= _needed(graph, dep)
    return out
