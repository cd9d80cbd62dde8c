"""One build, step by step: the stages the target needs, in file order.

Each stage has a config (rootless.build.imageconfig), the layers so far, a cache key chain
and a working tree whose upper directory collects changes. RUN, COPY and ADD change files
and (with --layers, the default) end in a commit: the upper directory's tar digest is taken
and the directory moved into the store as the layer itself — no copy, no re-extraction, no
compression (rootless.build.blobs packs a blob when the image is pushed or saved). With
--layers=false or --squash the changes of a stage stay in one upper directory and become
one layer at the end of the stage. WORKDIR's mkdir waits for the next such step, so a
cached step never needs the sandbox.

Nothing is tagged unless every step succeeded; the working trees are removed at the end
whatever happened. The store lock is held shared for the whole build, so `rl image prune`
cannot collect layers this build has not recorded yet.
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from rootless.build import imageconfig as ic
from rootless.build.args import ArgScope, parse_build_args, substitution_env
from rootless.build.cache import BuildCache, chain_key, hash_tree
from rootless.build.errors import BuildError
from rootless.build.parser import Instruction, parse, parse_instruction
from rootless.build.shellwords import Lexer, split_unquoted
from rootless.build.stages import Stage, StageGraph, declare_args, plan_stages
from rootless.errors import RlError

LAYER_STEPS = frozenset({"RUN", "COPY", "ADD"})


@dataclass
class BuildOptions:
    containerfile: str  # the text
    containerfile_name: str = "Containerfile"
    context: str | None = None
    tags: list[str] = field(default_factory=list)
    build_args: list[str] = field(default_factory=list)
    target: str | None = None
    no_cache: bool = False
    pull: str = "missing"
    network: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    layers: bool = True
    squash: bool = False
    quiet: bool = False
    platform: str | None = None
    compression: str = "gzip"
    compression_given: bool = False  # --compression-format: pack the blobs at build time
    timestamp: int | None = None
    tls_verify: bool | None = None
    log_level: str = "warning"
    environ: dict[str, str] = field(default_factory=dict)


@dataclass
class StageState:
    stage: Stage
    config: dict[str, Any]
    # bottom to top: {"diff_id", "descriptor" (the compressed blob, None until made)}, and
    # for layers this build made, "key" (the step's cache key, None without a cache record)
    layers: list[dict[str, Any]]
    args: ArgScope
    key: str
    shell: list[str]
    work: Any = None  # WorkTree with pending changes, or None
    pending_dirs: list[tuple[str, str]] = field(default_factory=list)  # (WORKDIR, owner)
    # mount points the RUNs since the last commit may have left in the upper directory
    mount_points: list[str] = field(default_factory=list)
    cmd_set: bool = False

    def links(self, store: Any) -> list[str]:
        return [store.layer_link(layer["diff_id"]) for layer in self.layers]


class Builder:
    def __init__(self, opts: BuildOptions, paths: Any, out: TextIO | None = None) -> None:
        from rootless.image.store import Store

        self.opts = opts
        self.paths = paths
        self.out = out or sys.stdout
        self.store = Store(paths)
        self.cache = BuildCache(self.store)
        self.sandbox: Any = None
        self.build_dir = os.path.join(paths.data_dir, "build", os.urandom(8).hex())
        self.empty_dir = os.path.join(self.build_dir, "empty")
        self.trees = 0
        self.step = 0
        self.total = 0
        self.results: dict[int, StageState] = {}
        self.lexer = Lexer()
        self.consumed: set[str] = set()
        self.ignore_text: str | None = None
        epoch = opts.timestamp
        if epoch is None and opts.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
            epoch = int(opts.environ["SOURCE_DATE_EPOCH"])
        self.epoch = epoch

    # -- output ----------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if not self.opts.quiet:
            self.out.write(text + "\n")
            self.out.flush()

    def now(self) -> str:
        return ic.rfc3339(self.epoch if self.epoch is not None else time.time())

    # -- the build -------------------------------------------------------------------------
    def build(self) -> Any:
        cf = parse(self.opts.containerfile, self.opts.containerfile_name)
        for notice in cf.notices:
            sys.stderr.write(f"rl: {notice}\n")
        self.lexer = Lexer(cf.escape)
        build_args = parse_build_args(self.opts.build_args, self.opts.environ)
        graph = plan_stages(cf, build_args, self.opts.target, self.consumed, self.opts.platform,
                            self.opts.context)
        if self.opts.context is not None:
            from rootless.build.ignore import IGNORE_FILES

            for name in IGNORE_FILES:
                try:
                    with open(os.path.join(self.opts.context, name), encoding="utf-8") as f:
                        self.ignore_text = f.read()
                    break
                except FileNotFoundError:
                    continue
        self.total = sum(1 + len(graph.stages[i].instructions) for i in graph.order)
        self.store.ensure_dirs()
        try:
            with self.store.using():
                for index in graph.order:
                    self.results[index] = self.build_stage(graph, graph.stages[index], build_args,
                                                           len(graph.order) > 1)
                image = self.commit_image(self.results[graph.target])
        finally:
            self.remove_build_dir()
        unused = sorted(set(build_args) - self.consumed)
        if unused:
            sys.stderr.write(f"[Warning] one or more build args were not consumed: "
                             f"[{' '.join(unused)}]\n")
        return image

    def remove_build_dir(self) -> None:
        if not os.path.exists(self.build_dir):
            return
        from rootless.runtime.storage import remove_tree_as_root

        build_dir = self.build_dir
        try:
            self.get_sandbox().as_root(lambda: remove_tree_as_root(build_dir), "rl:[cleanup]",
                                       mount_ns=False)
        except RlError as exc:
            sys.stderr.write(f"rl: removing {build_dir} failed: {exc}\n")

    def get_sandbox(self) -> Any:
        if self.sandbox is None:
            from rootless.build.worktree import Sandbox

            self.sandbox = Sandbox()
        return self.sandbox

    # -- stages ----------------------------------------------------------------------------
    def build_stage(self, graph: StageGraph, stage: Stage, build_args: dict[str, str],
                    multi: bool) -> StageState:
        prefix = f"[{graph.order.index(stage.index) + 1}/{len(graph.order)}] " if multi else ""
        self.step += 1
        self.say(f"{prefix}STEP {self.step}/{self.total}: {stage.from_ins.original}")
        state = self.from_state(graph, stage, build_args)
        for trigger in (state.config.get("config") or {}).get("OnBuild") or []:
            ins = parse_instruction(trigger, stage.from_ins.file, stage.from_ins.line,
                                    self.lexer.escape)
            self.say(f"{prefix}ONBUILD {ins.original}")
            self.execute(state, ins)
        ic.inner(state.config).pop("OnBuild", None)
        for ins in stage.instructions:
            self.step += 1
            self.say(f"{prefix}STEP {self.step}/{self.total}: {ins.original}")
            try:
                self.execute(state, ins)
            except BuildError:
                raise
            except RlError as exc:
                raise BuildError(f"{ins.cmd}: {exc.message}", ins.file, ins.line, exc.hint,
                                 exit_code=exc.exit_code) from None
        self.flush(state)
        return state

    def from_state(self, graph: StageGraph, stage: Stage, build_args: dict[str, str]) -> StageState:
        args = ArgScope(build_args, graph.meta, self.consumed)
        if stage.base_stage is not None:
            base = self.results[stage.base_stage]
            return StageState(stage, json.loads(json.dumps(base.config)), list(base.layers),
                              args, base.key, list(base.shell))
        if stage.base == "scratch":
            config = ic.scratch_config(stage.platform or self.opts.platform)
            return StageState(stage, config, [], args, chain_key("scratch", config["os"],
                                                                 config["architecture"],
                                                                 self.epoch),
                              list(ic.DEFAULT_SHELL))
        image = self.image(stage.base, stage.platform, stage.from_ins)
        layers = [{"diff_id": d, "descriptor": image.layers[i] if i < len(image.layers) else None}
                  for i, d in enumerate(image.diff_ids)]
        config = ic.from_base(image.config)
        shell = list(ic.inner(config).get("Shell") or ic.DEFAULT_SHELL)
        # the epoch is part of every key: --timestamp changes the layers' tars (diff_ids)
        return StageState(stage, config, layers, args, chain_key("image", image.id, self.epoch),
                          shell)

    def image(self, ref: str, platform: str | None, ins: Instruction) -> Any:
        from rootless.image.pull import ensure_image

        try:
            return ensure_image(ref, paths=self.paths, store=self.store, pull_policy=self.opts.pull,
                                platform=platform or self.opts.platform,
                                tls_verify=self.opts.tls_verify, quiet=self.opts.quiet)
        except RlError as exc:
            raise BuildError(f"{ins.cmd} {ref}: {exc.message}", ins.file, ins.line,
                             exc.hint) from None

    # -- instructions ----------------------------------------------------------------------
    def env(self, state: StageState) -> dict[str, str]:
        return substitution_env(state.args, ic.env_list(state.config))

    def word(self, state: StageState, ins: Instruction, text: str) -> str:
        try:
            return self.lexer.process_word(text, self.env(state))
        except BuildError as exc:
            raise ins.error(exc.reason, exc.hint) from None

    def words(self, state: StageState, ins: Instruction, text: str) -> list[str]:
        try:
            return self.lexer.process_words(text, self.env(state))
        except BuildError as exc:
            raise ins.error(exc.reason, exc.hint) from None

    def pairs(self, state: StageState, ins: Instruction) -> list[tuple[str, str]]:
        """ENV/LABEL: `k=v k2="v 2"`, or the legacy `ENV k the rest`."""
        words = split_unquoted(ins.args, self.lexer.escape)
        if words and "=" not in words[0]:
            if ins.cmd == "LABEL" or len(words) < 2:
                raise ins.error(f"{ins.cmd} names must be followed by a value (KEY=VALUE)")
            rest = ins.args.split(None, 1)[1]
            return [(words[0], self.word(state, ins, rest))]
        out = []
        for w in words:
            if "=" not in w:
                raise ins.error(f"{ins.cmd} {w!r}: expected KEY=VALUE")
            key, _, value = w.partition("=")
            out.append((self.word(state, ins, key), self.word(state, ins, value)))
        return out

    def execute(self, state: StageState, ins: Instruction) -> None:
        cmd = ins.cmd
        cfg = ic.inner(state.config)
        if cmd in LAYER_STEPS:
            self.layer_step(state, ins)
            return
        text = ins.original
        if cmd == "ARG":
            env = self.env(state)
            declare_args(ins, state.args, self.lexer, env)
            state.key = chain_key(state.key, "ARG", ins.args, state.args.values)
            return  # ARG leaves no history (Docker's rule)
        if cmd == "ENV":
            pairs = self.pairs(state, ins)
            for k, v in pairs:
                ic.set_env(state.config, k, v)
            text = "ENV " + " ".join(f'{k}="{v}"' if " " in v else f"{k}={v}" for k, v in pairs)
        elif cmd == "LABEL":
            labels = cfg.setdefault("Labels", {}) or {}
            cfg["Labels"] = labels
            pairs = self.pairs(state, ins)
            for k, v in pairs:
                labels[k] = v
            text = "LABEL " + " ".join(f"{k}={v}" for k, v in pairs)
        elif cmd == "MAINTAINER":
            state.config["author"] = self.word(state, ins, ins.args)
        elif cmd == "EXPOSE":
            ports = cfg.setdefault("ExposedPorts", {}) or {}
            cfg["ExposedPorts"] = ports
            for port in self.words(state, ins, ins.args):
                ports[port if "/" in port else f"{port}/tcp"] = {}
        elif cmd == "VOLUME":
            vols = cfg.setdefault("Volumes", {}) or {}
            cfg["Volumes"] = vols
            names = ins.json if ins.json is not None else self.words(state, ins, ins.args)
            for v in names:
                if not v:
                    raise ins.error("VOLUME specified can not be an empty string")
                vols[self.word(state, ins, v) if ins.json is not None else v] = {}
        elif cmd == "USER":
            cfg["User"] = self.word(state, ins, ins.args)
        elif cmd == "WORKDIR":
            path = self.word(state, ins, ins.args)
            if not path.startswith("/"):
                path = posixpath.join(cfg.get("WorkingDir") or "/", path)
            path = posixpath.normpath(path)
            cfg["WorkingDir"] = path
            # Docker: "If the WORKDIR doesn't exist, it will be created even if it's not used
            # in any subsequent Dockerfile instruction": with the next RUN/COPY/ADD, or alone
            # at the end of the stage (workdir_layer)
            if path != "/" and (path, "") not in state.pending_dirs:
                state.pending_dirs.append((path, ""))
        elif cmd in ("CMD", "ENTRYPOINT"):
            # Docker: SHELL applies to the shell form of RUN, CMD and ENTRYPOINT (buildah
            # 1.28 keeps /bin/sh -c here: openshift/imagebuilder#154, docs/build.md)
            argv = ins.json if ins.json is not None else [*state.shell, ins.args]
            if cmd == "CMD":
                cfg["Cmd"] = argv
                state.cmd_set = True
            else:
                cfg["Entrypoint"] = argv
                if not state.cmd_set:
                    cfg.pop("Cmd", None)  # Docker: ENTRYPOINT resets an inherited CMD
        elif cmd == "SHELL":
            assert ins.json is not None
            state.shell = list(ins.json)
            cfg["Shell"] = list(ins.json)
        elif cmd == "STOPSIGNAL":
            cfg["StopSignal"] = self.word(state, ins, ins.args)
        elif cmd == "HEALTHCHECK":
            cfg["Healthcheck"] = self.healthcheck(state, ins)
        elif cmd == "ONBUILD":
            assert ins.onbuild is not None
            cfg.setdefault("OnBuild", [])
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), ins.onbuild.original]
        state.key = chain_key(state.key, cmd, text, cfg)
        record = self.cache.get(state.key) if self.use_cache else None
        created = record["created"] if record else self.now()
        if self.use_cache and record is None:
            self.cache.put(state.key, {"created": created})
        ic.add_history(state.config, created, ic.nop(text), True)

    @property
    def use_cache(self) -> bool:
        return self.opts.layers and not self.opts.squash and not self.opts.no_cache

    def healthcheck(self, state: StageState, ins: Instruction) -> dict[str, Any]:
        words = ins.args.split(None, 1)
        if words and words[0].upper() == "NONE":
            return {"Test": ["NONE"]}
        if not words or words[0].upper() != "CMD":
            raise ins.error("HEALTHCHECK takes CMD or NONE")
        rest = words[1] if len(words) > 1 else ""
        from rootless.build.parser import _json_list

        argv = _json_list(rest) if rest.startswith("[") else None
        out: dict[str, Any] = {"Test": ["CMD", *argv] if argv is not None else ["CMD-SHELL", rest]}
        for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                          ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
            value = ins.flag(flag)
            if value:
                out[key] = _duration_ns(value, ins)
        if ins.flag("retries"):
            out["Retries"] = int(ins.flag("retries") or 0)
        return out

    # -- steps that change files -----------------------------------------------------------
    def layer_step(self, state: StageState, ins: Instruction) -> None:
        if ins.cmd == "RUN":
            plan = self.plan_run(state, ins)
            key = chain_key(state.key, "RUN", plan["argv"], plan["env"], plan["mounts_key"],
                            ic.inner(state.config).get("WorkingDir"))
            history = self.run_history(state, plan["argv"])
        else:
            job, key_parts, history = self.plan_copy(state, ins)
            key = chain_key(state.key, ins.cmd, key_parts, state.pending_dirs)
        record = self.cache.get(key) if self.use_cache else None
        if record and record.get("diff_id") and self.store.has_layer(record["diff_id"]):
            self.drop_pending(state)
            self.add_layer(state, record["diff_id"], self.recorded_blob(record), record["created"],
                           history, key)
            state.key = key
            self.say(f"--> Using cache {key[:12]}")
            return
        work = self.worktree(state)
        if ins.cmd == "RUN":
            self.run_step(state, ins, plan, work)
            state.mount_points += [p for p in plan["mount_points"] if p not in state.mount_points]
        else:
            self.copy_step(state, ins, job, work)
        state.key = key
        if self.opts.layers and not self.opts.squash:
            created = self.now()
            diff_id = self.commit_tree(state, work)
            self.add_layer(state, diff_id, None, created, history, key)
            if self.use_cache or self.opts.no_cache:
                self.cache.put(key, {"created": created, "diff_id": diff_id})
            self.say(f"--> {key[:12]}")
        else:
            ic.add_history(state.config, self.now(), history, True)
            state.config["history"][-1]["rl_pending"] = True

    def add_layer(self, state: StageState, diff_id: str, descriptor: dict[str, Any] | None,
                  created: str, history: str, key: str | None = None) -> None:
        state.layers.append({"diff_id": diff_id, "descriptor": descriptor, "key": key})
        ic.add_layer(state.config, diff_id)
        ic.add_history(state.config, created, history, False)

    def recorded_blob(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The compressed blob a cache record names, if it is still in the store."""
        desc = record.get("layer")
        if isinstance(desc, dict) and self.store.has_blob(desc.get("digest", "")):
            return desc
        return None

    def drop_pending(self, state: StageState) -> None:
        state.pending_dirs.clear()

    def worktree(self, state: StageState) -> Any:
        from rootless.build.worktree import WorkTree

        if state.work is None:
            os.makedirs(self.empty_dir, exist_ok=True)
            self.trees += 1
            state.work = WorkTree(os.path.join(self.build_dir, str(self.trees)),
                                  self.paths.layers_dir, state.links(self.store), self.empty_dir)
            state.work.create()
        return state.work

    def flush(self, state: StageState) -> None:
        """At the end of a stage: pending WORKDIRs and --layers=false changes become a layer."""
        if state.pending_dirs and state.work is None:
            self.workdir_layer(state)
            return
        if state.work is None:
            return
        work = state.work
        if state.pending_dirs:
            self.make_pending_dirs(state, work)
        from rootless.build.worktree import upper_is_empty

        if upper_is_empty(work.dirs.upper):
            state.work = None
            return
        pending = [h for h in state.config.get("history", []) if h.pop("rl_pending", False)]
        diff_id = self.commit_tree(state, work)
        history = pending[-1] if pending else None
        state.layers.append({"diff_id": diff_id, "descriptor": None, "key": None})
        ic.add_layer(state.config, diff_id)
        if history is not None:
            history.pop("empty_layer", None)
        else:
            ic.add_history(state.config, self.now(), ic.nop("WORKDIR"), False)

    def make_pending_dirs(self, state: StageState, work: Any) -> None:
        dirs = list(state.pending_dirs)
        state.pending_dirs.clear()

        def mkdirs() -> None:
            work.mount()
            _make_workdirs(work.dirs.merged, dirs)

        self.get_sandbox().as_root(mkdirs)

    def workdir_layer(self, state: StageState) -> None:
        """WORKDIRs that no RUN, COPY or ADD followed: Docker makes the directory anyway
        ("created even if it's not used"), as a layer of its own; cached like other steps."""
        key = chain_key(state.key, "WORKDIR", state.pending_dirs)
        history = next((h for h in reversed(state.config.get("history", []))
                        if h.get("created_by", "").startswith(ic.nop("WORKDIR "))), None)
        record = self.cache.get(key) if self.use_cache else None
        if record is not None and (not record.get("diff_id")
                                   or self.store.has_layer(record["diff_id"])):
            state.pending_dirs.clear()
        else:
            work = self.worktree(state)
            self.make_pending_dirs(state, work)
            from rootless.build.worktree import upper_is_empty

            if not upper_is_empty(work.dirs.upper):
                record = {"created": self.now(), "diff_id": self.commit_tree(state, work)}
            else:
                state.work = None
                record = {"created": self.now()}
            if self.use_cache or self.opts.no_cache:
                self.cache.put(key, record)
        state.key = key
        if not record.get("diff_id"):
            return  # the directories were there already
        state.layers.append({"diff_id": record["diff_id"], "descriptor": self.recorded_blob(record),
                             "key": key})
        ic.add_layer(state.config, record["diff_id"])
        if history is not None:
            history.pop("empty_layer", None)
        else:
            ic.add_history(state.config, record["created"], ic.nop("WORKDIR"), False)

    def commit_tree(self, state: StageState, work: Any) -> str:
        """Move the work tree's upper directory into the store as a layer (without the mount
        points the RUNs since the last commit left there); returns its diff_id. Only the tar's
        digest is computed here: the compressed blob is made when an image needs it
        (commit_image), so the layers of stages that only feed COPY --from are never
        compressed."""
        from rootless.build.layer import tar_digest
        from rootless.image.unpack import remove_tree

        store = self.store
        upper = work.dirs.upper
        layers_dir = self.paths.layers_dir
        lowers = [os.path.join(layers_dir, link) for link in work.lowers]
        epoch = self.epoch
        mount_points = list(state.mount_points)
        state.mount_points.clear()

        def commit() -> str:
            _remove_mount_points(upper, lowers, mount_points)
            diff_id, size = tar_digest(upper, epoch=epoch)
            store.add_layer(diff_id, upper, size)
            remove_tree(work.root)
            return diff_id

        diff_id: str = self.get_sandbox().as_root(commit, "rl:[commit]", mount_ns=False)
        state.work = None
        return diff_id

    def make_blobs(self, layers: list[dict[str, Any]]) -> None:
        """Descriptors for the image's own layers: a compressed blob in the wanted format
        when one exists (a cache record's, another image's); else, by default, the tar
        alone: the blob is packed when the image is pushed or saved (rootless.build.blobs),
        so a build compresses nothing. With --compression-format or a fixed timestamp the
        blobs are packed now (the layer directory keeps its real times, the tar has not)."""
        from rootless.build.blobs import pack_blobs, uncompressed
        from rootless.build.layer import media_type

        wanted = media_type(self.opts.compression)
        todo = []
        for layer in layers:
            if "key" not in layer:
                continue  # a base image's layer: its blob stays as it came
            desc = layer["descriptor"]
            if desc is not None and desc["mediaType"] == wanted:
                continue
            found = self.store.find_layer_blob(layer["diff_id"])
            if found is not None and found["mediaType"] == wanted:
                layer["descriptor"] = found
            elif self.opts.compression_given or self.epoch is not None:
                todo.append(layer)
            elif desc is None:
                layer["descriptor"] = uncompressed(self.store, layer["diff_id"])
        if not todo:
            return
        made = pack_blobs(self.get_sandbox(), self.store, str(self.paths.tmp),
                          [layer["diff_id"] for layer in todo], self.opts.compression, self.epoch)
        for layer, desc in zip(todo, made, strict=True):
            layer["descriptor"] = desc
            if layer.get("key"):
                record = self.cache.get(layer["key"])
                if record is not None and record.get("diff_id") == layer["diff_id"]:
                    self.cache.put(layer["key"], {**record, "layer": desc})

    # -- RUN -------------------------------------------------------------------------------
    def plan_run(self, state: StageState, ins: Instruction) -> dict[str, Any]:
        from rootless.build.run import mount_points, parse_mounts, run_command

        argv, script = run_command(ins, state.shell)
        mounts = parse_mounts(ins)
        run_env = state.args.run_env()
        env = [f"{k}={v}" for k, v in run_env.items()] + ic.env_list(state.config)
        mounts_key = [(m.kind, m.target, m.source, m.from_ref, m.readonly, m.cache_id,
                       self.bind_content_key(state, ins, m)) for m in mounts]
        network = ins.flag("network") or self.opts.network
        if network == "default":
            network = self.opts.network
        return {"argv": argv, "script": script, "mounts": mounts, "env": env,
                "mounts_key": mounts_key, "network": network,
                "mount_points": mount_points(mounts, script)}

    def run_history(self, state: StageState, argv: list[str]) -> str:
        args = state.args.history_args()
        prefix = ""
        if args:
            prefix = f"|{len(args)} " + " ".join(f"{k}={v}" for k, v in args.items()) + " "
        return prefix + " ".join(argv)

    def run_step(self, state: StageState, ins: Instruction, plan: dict[str, Any], work: Any) -> None:
        from rootless.build.run import cache_mount_dir, check_secret, launch_step
        from rootless.spec import Volume

        workdir = ic.inner(state.config).get("WorkingDir")
        if workdir and workdir != "/":
            # the working directory exists when the command starts (buildah makes it then)
            state.pending_dirs.append((workdir, ""))
        if state.pending_dirs:
            self.make_pending_dirs(state, work)
        volumes = []
        for m in plan["mounts"]:
            if m.kind == "cache":
                volumes.append(Volume(kind="bind", source=cache_mount_dir(self.paths.data_dir,
                                                                          m.cache_id or m.target),
                                      destination=m.target, readonly=m.readonly))
            elif m.kind == "secret":
                path = check_secret(m, self.opts.secrets, ins)
                if path:
                    volumes.append(Volume(kind="bind", source=os.path.abspath(path),
                                          destination=m.target, readonly=True))
            elif m.kind == "tmpfs":
                volumes.append(Volume(kind="tmpfs", source=None, destination=m.target))
            elif m.kind == "bind":
                volumes.append(self.bind_volume(state, ins, m))
        if plan["script"]:
            name, text = plan["script"]
            path = os.path.join(self.build_dir, f"script-{os.urandom(4).hex()}")
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
            volumes.append(Volume(kind="bind", source=path, destination=f"/dev/pipes/{name}",
                                  readonly=True))
        cfg = ic.inner(state.config)
        lowers = [os.path.relpath(self.empty_dir, self.paths.layers_dir), *work.lowers]
        code = launch_step(paths=self.paths, lowers=lowers, layers_dir=self.paths.layers_dir,
                           dirs=work.dirs, command=plan["argv"], env=plan["env"],
                           workdir=cfg.get("WorkingDir"), user=cfg.get("User"),
                           network=plan["network"], volumes=volumes,
                           log_level=self.opts.log_level, quiet_output=self.opts.quiet)
        if code != 0:
            raise BuildError(
                f"building at STEP \"{ins.original}\": while running runtime: exit status {code}",
                ins.file, ins.line, exit_code=code)  # podman exits with the RUN's status

    def bind_content_key(self, state: StageState, ins: Instruction, m: Any) -> str | None:
        """What a bind mount shows, for the step's cache key (BuildKit keys on it too): the
        stage's key or image's ID for from=, the content of the context's source else."""
        if m.kind != "bind":
            return None
        if m.from_ref:
            return self.source_key(state, ins, m.from_ref)
        if self.opts.context is None:
            return None
        rel = posixpath.normpath("/" + (m.source or "/")).lstrip("/")
        try:
            return self.hash_sources(os.path.abspath(self.opts.context), [rel])
        except FileNotFoundError:
            return None  # the mount fails when the step runs, with its own message

    def bind_volume(self, state: StageState, ins: Instruction, m: Any) -> Any:
        from rootless.primitives.mounts import secure_join
        from rootless.spec import Volume

        if m.from_ref:
            return self.stage_volume(state, ins, m)
        if self.opts.context is None:
            raise ins.error("--mount=type=bind needs a build context")
        return Volume(kind="bind", source=secure_join(os.path.abspath(self.opts.context),
                                                      m.source or "/"),
                      destination=m.target, readonly=m.readonly)

    def stage_volume(self, state: StageState, ins: Instruction, m: Any) -> Any:
        """--mount=type=bind,from=STAGE|IMAGE: source= in that tree, as an overlay of the
        layer directories that hold it (nothing copied); rw gets a scratch upper directory
        whose writes are dropped with the build, as BuildKit drops them."""
        import shutil

        from rootless.build.run import overlay_sources
        from rootless.build.worktree import WorkTree
        from rootless.primitives.mounts import secure_join
        from rootless.spec import Volume

        links = self.source_layers(state, ins, m.from_ref)
        from rootless.runtime.rootfs import overlay_lowers

        layers = overlay_lowers([os.path.join(self.paths.layers_dir, link) for link in links])
        os.makedirs(self.empty_dir, exist_ok=True)
        self.trees += 1
        tree = WorkTree(os.path.join(self.build_dir, str(self.trees)), self.paths.layers_dir,
                        links, self.empty_dir)
        tree.create()
        source = m.source or "/"
        scratch = os.path.join(tree.root, "file")

        def find() -> Any:
            merged = tree.mount(upper=False)
            host = secure_join(merged, source)
            if not os.path.lexists(host):
                return None
            rel = os.path.relpath(host, merged)
            found = overlay_sources(layers, "" if rel == "." else rel)
            if found and found[0] == "file" and not m.readonly:
                shutil.copy2(found[1][0], scratch)  # rw on a file: never on the layer's own
                return ("file", [scratch])
            return found

        found = self.get_sandbox().as_root(find, "rl:[mount]")
        if found is None:
            raise ins.error(f"--mount=type=bind,from={m.from_ref}: {source} is not in that "
                            "stage or image")
        kind, paths = found
        if kind == "file":
            return Volume(kind="bind", source=paths[0], destination=m.target,
                          readonly=m.readonly)
        lowers = [*paths, self.empty_dir]  # overlay needs two lowers without an upper
        options = "lowerdir=" + ":".join(lowers)
        if not m.readonly:
            options += f",upperdir={tree.dirs.upper},workdir={tree.dirs.work}"
        if any(c in p for p in lowers for c in ":,") or len(options) > 3500:
            raise ins.error(f"--mount=type=bind,from={m.from_ref}: the layer paths do not fit "
                            "in overlay's mount options", "COPY --from the stage instead")
        return Volume(kind="overlay", source=None, destination=m.target, readonly=m.readonly,
                      options=options + ",userxattr")

    # -- COPY / ADD ------------------------------------------------------------------------
    def plan_copy(self, state: StageState, ins: Instruction) -> tuple[Any, list[Any], str]:
        from rootless.build.copy import CopyJob, expand, has_glob

        words = list(ins.json) if ins.json is not None else split_unquoted(ins.args,
                                                                          self.lexer.escape)
        if len(words) < 2 and not ins.heredocs:
            raise ins.error(f"{ins.cmd} requires at least two arguments, but only one was "
                            "provided. Destination could not be determined")
        env = self.env(state)
        heredoc_names = {h.name: h for h in ins.heredocs}
        dest = self.word(state, ins, words[-1])
        cfg = ic.inner(state.config)
        if not dest.startswith("/"):
            trailing = dest.endswith("/") or dest in (".", "")
            dest = posixpath.join(cfg.get("WorkingDir") or "/", dest)
            dest = posixpath.normpath(dest) + ("/" if trailing else "")
        chmod = None
        if ins.flag("chmod"):
            try:
                chmod = int(ins.flag("chmod") or "", 8)
            except ValueError:
                raise ins.error(f"--chmod={ins.flag('chmod')}: expected an octal mode") from None
        chown = self.word(state, ins, ins.flag("chown") or "") or None
        job = CopyJob(sources=[], src_root="", dest=dest, chown=chown, chmod=chmod,
                      add=ins.cmd == "ADD")
        key_parts: list[Any] = [dest, chown, chmod, ins.cmd]
        patterns: list[str] = []
        for raw in words[:-1]:
            name = raw.lstrip("<-").strip("'\"") if raw.startswith("<<") else None
            if name in heredoc_names:
                doc = heredoc_names[name]
                content = doc.content
                if doc.expand:
                    content = _expand_heredoc(self.lexer, content, env)
                job.files[name] = content.encode()
                key_parts.append(("heredoc", name, content))
                continue
            patterns.append(self.word(state, ins, raw))
        from_ref = self.word(state, ins, ins.flag("from") or "") or None
        history = f"/bin/sh -c #(nop) {ins.cmd} " + " ".join([*patterns, dest])
        if from_ref:
            job.src_root = ""  # mounted in the sandbox
            key_parts.append(("from", self.source_key(state, ins, from_ref), patterns))
            job_from = from_ref
        else:
            job_from = None
            for pattern in patterns:
                if ins.cmd == "ADD" and _is_url(pattern):
                    name, data, mtime = self.download(pattern, ins)
                    job.files[name] = data
                    job.file_modes[name] = 0o600
                    if mtime is not None:
                        job.file_mtimes[name] = mtime
                    key_parts.append(("url", pattern, _sha(data)))
                    continue
                assert self.opts.context is not None
                matcher = self.matcher()
                found = expand(self.opts.context, pattern, matcher)
                if not found:
                    raise ins.error(f"{ins.cmd} {pattern}: no such file or directory in the build "
                                    "context" + (" (or it is excluded by the ignore file)"
                                                 if self.ignore_text else ""))
                job.wildcard = job.wildcard or has_glob(pattern)
                job.sources.extend(found)
            job.src_root = os.path.abspath(self.opts.context) if self.opts.context else ""
            job.ignore_text = self.ignore_text
            key_parts.append(("context", self.hash_sources(job.src_root, job.sources)))
        job_patterns = patterns
        return (job, job_from, job_patterns), key_parts, history

    def matcher(self) -> Any:
        from rootless.build.ignore import Matcher, parse_ignore

        return Matcher(parse_ignore(self.ignore_text)) if self.ignore_text else None

    def hash_sources(self, root: str, sources: list[str]) -> str:
        matcher = self.matcher()
        from rootless.primitives.mounts import secure_join

        pairs = [(rel, secure_join(root, rel) if rel else root) for rel in sources]
        return hash_tree(pairs, (lambda rel: matcher.excluded(rel)) if matcher else None)

    def source_key(self, state: StageState, ins: Instruction, ref: str) -> str:
        found = self.stage_ref(state, ref)
        if found is not None:
            return self.results[found].key
        return self.image(ref, None, ins).id

    def stage_ref(self, state: StageState, ref: str) -> int | None:
        stage = state.stage
        for index, result in self.results.items():
            s = result.stage
            if index < stage.index and (s.name == ref.lower() or str(s.index) == ref):
                return index
        return None

    def source_layers(self, state: StageState, ins: Instruction, ref: str) -> list[str]:
        found = self.stage_ref(state, ref)
        if found is not None:
            return self.results[found].links(self.store)
        image = self.image(ref, None, ins)
        return list(image.layer_links(self.store))

    def download(self, url: str, ins: Instruction) -> tuple[str, bytes, float | None]:
        import email.utils

        import httpx

        try:
            with httpx.Client(follow_redirects=True, timeout=60.0) as client:
                response = client.get(url)
        except httpx.HTTPError as exc:
            raise ins.error(f"ADD {url}: download failed: {exc}") from None
        if response.status_code != 200:
            raise ins.error(f"ADD {url}: the server answered HTTP {response.status_code}")
        name = posixpath.basename(httpx.URL(url).path) or "download"
        mtime = None
        modified = response.headers.get("Last-Modified")
        if modified:
            try:
                mtime = email.utils.parsedate_to_datetime(modified).timestamp()
            except (TypeError, ValueError):
                mtime = None
        return name, response.content, mtime

    def copy_step(self, state: StageState, ins: Instruction, plan: Any, work: Any) -> None:
        from rootless.build.copy import expand, run_copy

        job, from_ref, patterns = plan
        dirs = list(state.pending_dirs)
        state.pending_dirs.clear()
        source_tree = None
        if from_ref:
            from rootless.build.worktree import WorkTree

            os.makedirs(self.empty_dir, exist_ok=True)
            self.trees += 1
            source_tree = WorkTree(os.path.join(self.build_dir, str(self.trees)),
                                   self.paths.layers_dir, self.source_layers(state, ins, from_ref),
                                   self.empty_dir)
            source_tree.create()

        def copy() -> None:
            if dirs:
                work.mount()
                _make_workdirs(work.dirs.merged, dirs)
            merged = work.dirs.merged if dirs else work.mount()
            if source_tree is not None:
                job.src_root = source_tree.mount(upper=False)
                for pattern in patterns:
                    found = expand(job.src_root, pattern, None)
                    if not found:
                        raise ins.error(f"COPY --from={from_ref} {pattern}: no such file or "
                                        "directory")
                    job.wildcard = job.wildcard or any(c in pattern for c in "*?[")
                    job.sources.extend(found)
            run_copy(job, merged)

        try:
            self.get_sandbox().as_root(copy, "rl:[copy]")
        except BuildError as exc:
            if exc.file:
                raise
            raise ins.error(exc.reason, exc.hint) from None

    # -- the image -------------------------------------------------------------------------
    def commit_image(self, state: StageState) -> Any:
        from rootless.image import mediatypes as mt

        config = state.config
        for h in config.get("history", []):
            h.pop("rl_pending", None)
        if self.opts.labels:
            labels = ic.inner(config).setdefault("Labels", {}) or {}
            ic.inner(config)["Labels"] = labels
            labels.update(self.opts.labels)
        if "created" not in config:
            config["created"] = self.now()
        if self.epoch is not None:
            config["created"] = ic.rfc3339(self.epoch)
        self.make_blobs(state.layers)
        layers = []
        for layer in state.layers:
            desc = layer["descriptor"] or self.store.find_layer_blob(layer["diff_id"])
            if desc is None:
                raise BuildError(f"the blob of layer {layer['diff_id']} is missing from the store",
                                 hint="pull the base image again")
            layers.append({"mediaType": desc["mediaType"], "digest": desc["digest"],
                           "size": desc["size"]})
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        config_digest = "sha256:" + _sha(config_bytes)
        self.store.write_blob_bytes(config_bytes, config_digest)
        manifest = ic.manifest_for(config_digest, len(config_bytes), layers,
                                   self.opts.annotations or None)
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        manifest_digest = "sha256:" + _sha(manifest_bytes)
        self.store.write_blob_bytes(manifest_bytes, manifest_digest)
        names = [normalize_tag(t) for t in self.opts.tags]
        image = self.store.add_image(manifest_digest=manifest_digest, config_digest=config_digest,
                                     config=config, names=names, layers=layers,
                                     media_type=mt.OCI_MANIFEST)
        if names:
            self.say(f"COMMIT {names[0]}")
        self.say(f"--> {image.short_id}")
        for name in names:
            self.say(f"Successfully tagged {name}")
        return image


def normalize_tag(text: str) -> str:
    """podman's rule: a short name is localhost/NAME; a missing tag is :latest."""
    from rootless.image.reference import parse_reference

    ref = parse_reference(text)
    if ref.registry == "docker.io" and not text.startswith(("docker.io/", "index.docker.io/")):
        ref = parse_reference(f"localhost/{text}")
    return str(ref)


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _expand_heredoc(lexer: Lexer, content: str, env: dict[str, str]) -> str:
    """An unquoted heredoc's variables are substituted; its quotes stay as written."""
    out = []
    for line in content.splitlines(keepends=True):
        escaped = line.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')
        out.append(lexer.process_word(escaped, env))
    return "".join(out)


def _duration_ns(text: str, ins: Instruction) -> int:
    import re

    units = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
             "h": 3_600_000_000_000}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ins.error(f"invalid duration {text!r} (e.g. 30s, 1m30s)")
    for number, unit in parts:
        total += float(number) * units[unit]
    return int(total)


def _make_workdirs(merged: str, dirs: list[tuple[str, str]]) -> None:
    """WORKDIR creates its directory (root-owned 0755, as buildah does) when missing."""
    from rootless.primitives.mounts import secure_join

    for path, _owner in dirs:
        host = secure_join(merged, path)
        if not os.path.isdir(host):
            os.makedirs(host, 0o755, exist_ok=True)


def mount_point_leftovers(upper: str, lowers: list[str], targets: list[str]) -> list[str]:
    """The empty files and directories the launcher made in upper as mount points (relative
    paths, children before their parents), except those the image had: then they are a
    copy-up and belong to the layer."""
    found: list[str] = []
    for target in targets:
        rel = target.strip("/")
        while rel and rel not in found:
            path = os.path.join(upper, rel)
            in_lower = any(os.path.lexists(os.path.join(lower, rel)) for lower in lowers)
            if in_lower or not os.path.lexists(path) or os.path.islink(path):
                break
            if os.path.isdir(path):
                if any(f"{rel}/{name}" not in found for name in os.listdir(path)):
                    break
            elif os.path.getsize(path) != 0:
                break
            found.append(rel)
            rel = os.path.dirname(rel)
    return found


def _remove_mount_points(upper: str, lowers: list[str], targets: list[str]) -> None:
    """Remove the launcher's mount points from an upper directory that becomes a layer."""
    for rel in mount_point_leftovers(upper, lowers, targets):
        path = os.path.join(upper, rel)
        if os.path.isdir(path):
            os.rmdir(path)
        else:
            os.unlink(path)
