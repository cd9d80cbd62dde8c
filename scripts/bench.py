#!/usr/bin/env python3
"""rl's benchmarks: whole-process timings against baselines measured in the same run.

    scripts/bench.py [--runs N] [SECTION ...]
        sections: startup seccomp pull pull_single lifecycle network oci build push
        (pull includes pull_single)

Run as an unprivileged user with `rl` on PATH (as root it re-runs itself as RL_BENCH_USER,
default rltest, the user scripts/test.sh creates). Timings on shared VMs are noisy: commands
are interleaved (A B A B ...), each figure is a median, and every claim is a ratio against a
baseline from the same run. Baselines: `unshare ... chroot` (the floor), bubblewrap, and
rootless podman (with runc: crun refuses this host's hybrid cgroups); for `build`, buildah
bud on the multi-stage Python application tests/pyapp (bases from the host's Python, its
package index on 127.0.0.1); for `push`, podman push of the ~100 MB image, each push to a
new, empty registry.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--events-backend=file"]


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-400:]}")
    return elapsed


def compare(label: str, commands: dict[str, Callable[[], float]], runs: int, reference: str,
            samples_out: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Interleave the commands `runs` times (after one warm-up each); print medians, the ratio
    of medians, and the median of the ratios pair by pair (each run against the reference run
    of the same round), which holds better when the machine's speed drifts."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for fn in commands.values():
        fn()
    for _ in range(runs):
        for name, fn in commands.items():
            samples[name].append(fn())
    if samples_out is not None:
        samples_out.update(samples)
    medians = {name: statistics.median(v) for name, v in samples.items()}
    print(f"\n## {label} (median of {runs}; ratios to {reference}: of medians / paired)")
    for name, med in medians.items():
        lo, hi = min(samples[name]), max(samples[name])
        ratio = med / medians[reference] if medians[reference] else float("nan")
        paired = statistics.median(a / b for a, b in zip(samples[name], samples[reference], strict=True))
        print(f"  {name:<40} {med * 1000:9.1f} ms   [{lo * 1000:.1f}–{hi * 1000:.1f}]"
              f"   ×{ratio:.3f} / ×{paired:.3f}")
    return medians


def ratios_to(samples: dict[str, list[float]], reference: str) -> None:
    """Samples of one compare() against another reference measured in the same rounds."""
    ref = samples[reference]
    for name, values in samples.items():
        med = statistics.median(values)
        paired = statistics.median(a / b for a, b in zip(values, ref, strict=True))
        print(f"  {name:<40} {med * 1000:9.1f} ms   ×{med / statistics.median(ref):.3f} / ×{paired:.3f}")


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


class Bench:
    def __init__(self, runs: int, work: Path) -> None:
        self.runs = runs
        self.work = work
        self.rootfs = work / "busybox"
        subprocess.run([str(REPO / "scripts" / "build-busybox-rootfs.sh"), str(self.rootfs)],
                       check=True, stdout=subprocess.DEVNULL)
        self.env = dict(os.environ)
        self.env["XDG_DATA_HOME"] = str(work / "data")
        self.env["XDG_CONFIG_HOME"] = str(work / "config")
        self.registry: str | None = None
        self.podman_ready = False
        # A tag of this run's own, removed at the end: other runs may come and go meanwhile.
        self.podman_ref = f"localhost/rl-bench-busybox:{os.getpid()}"

    def rl(self, *args: str) -> list[str]:
        return ["rl", *args]

    def podman_image(self) -> bool:
        if self.podman_ready:
            return True
        if not have("podman"):
            print("  (podman not installed: no podman baseline)")
            return False
        tar = self.work / "busybox.tar"
        subprocess.run(["tar", "-C", str(self.rootfs), "-cf", str(tar), "."], check=True)
        subprocess.run([*PODMAN, "import", str(tar), self.podman_ref],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.podman_ready = True
        return True

    def start_registry(self) -> str:
        if self.registry is None:
            out = subprocess.run([str(REPO / "scripts" / "local-registry.sh"), "start", str(self.work / "registry")],
                                 check=True, capture_output=True, text=True)
            self.registry = out.stdout.strip()
            subprocess.run([sys.executable, str(REPO / "scripts" / "build_test_images.py"), self.registry, "--insecure"],
                           check=True, stdout=subprocess.DEVNULL, env=self.env)
        return self.registry

    def stop(self) -> None:
        if self.podman_ready:
            subprocess.run([*PODMAN, "rmi", "-f", self.podman_ref], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if self.registry:
            subprocess.run([str(REPO / "scripts" / "local-registry.sh"), "stop", str(self.work / "registry")])

    # -- sections --------------------------------------------------------------------------
    def startup(self) -> None:
        bb = str(self.rootfs)
        cmds: dict[str, Callable[[], float]] = {
            "rl run --rootfs (network none)": lambda: timed(self.rl("run", "--rm", "--network", "none", "--rootfs", bb, "true"), self.env),
            "unshare -Urmpfiun chroot (floor)": lambda: timed(["unshare", "-Urmpfiun", "--mount-proc", "chroot", bb, "/bin/true"]),
        }
        if have("bwrap"):
            cmds["bwrap --unshare-all"] = lambda: timed(["bwrap", "--unshare-all", "--bind", bb, "/", "--proc", "/proc",
                                                        "--dev", "/dev", "/bin/true"])
        reg = self.start_registry()
        image = f"{reg}/rltest/busybox:latest"
        subprocess.run(self.rl("pull", "-q", "--tls-verify=false", image), check=True, env=self.env,
                       stdout=subprocess.DEVNULL)
        cmds["rl run IMAGE (pulled, network none)"] = lambda: timed(self.rl("run", "--rm", "--network", "none", image, "true"), self.env)
        # A container never copies image data: a ~100 MB image starts as fast as busybox.
        self.push_big_image(reg)
        big = f"{reg}/rltest/big:latest"
        subprocess.run(self.rl("pull", "-q", "--tls-verify=false", big), check=True, env=self.env,
                       stdout=subprocess.DEVNULL)
        cmds["rl run BIG IMAGE (~100 MB, 4 layers)"] = lambda: timed(self.rl("run", "--rm", "--network", "none", big, "true"), self.env)
        if self.podman_image():
            cmds["podman run --network none (runc)"] = lambda: timed([*PODMAN, "run", "--rm", "--runtime", "runc", "--network=none",
                                                                     self.podman_ref, "true"])
        ref = "podman run --network none (runc)" if "podman run --network none (runc)" in cmds else "unshare -Urmpfiun chroot (floor)"
        compare("start-up: run `true` and exit", cmds, self.runs, ref)

    def seccomp(self) -> None:
        bb = str(self.rootfs)
        cmds = {
            "rl run (default seccomp profile)": lambda: timed(self.rl("run", "--rm", "--network", "none", "--rootfs", bb, "true"), self.env),
            "rl run --security-opt seccomp=unconfined": lambda: timed(self.rl("run", "--rm", "--network", "none", "--security-opt", "seccomp=unconfined", "--rootfs", bb, "true"), self.env),
        }
        m = compare("seccomp cost", cmds, self.runs, "rl run --security-opt seccomp=unconfined")
        vals = list(m.values())
        print(f"  added by the default profile (difference of medians): {(vals[0] - vals[1]) * 1000:.1f} ms")

    def pull(self) -> None:
        reg = self.start_registry()
        self.push_big_image(reg)
        cmds: dict[str, Callable[[], float]] = {
            "rl pull (~100 MB, 4 layers, empty store)": lambda: self.rl_pull(f"{reg}/rltest/big:latest")}
        if have("podman"):
            cmds["podman pull (~100 MB, 4 layers, empty store)"] = lambda: self.podman_pull(f"{reg}/rltest/big:latest")
        compare("pull and unpack", cmds, max(3, self.runs // 3), list(cmds)[-1])
        self.pull_single(reg)

    def pull_single(self, reg: str | None = None) -> None:
        """Issue 12 item 9: a single-layer image (~50 MB, ~3,500 entries, the shape of a
        distribution's base layer), rl pull against podman pull and against `tar -xzf` of
        the same gzip layer into an empty directory, each from an empty store, same disk."""
        reg = reg or self.start_registry()
        bti = self.image_builder()
        from rootless.image.registry import RegistryClient

        image = bti.single_layer_image()
        (layer,) = image.layers
        blob = self.work / "single-layer.tar.gz"
        blob.write_bytes(layer.blob)
        with RegistryClient(reg, insecure=True) as client:
            bti.push_image(client, "rltest/single", "latest", image)
        ref = f"{reg}/rltest/single:latest"
        print(f"\n  single layer: {len(layer.blob) / 1e6:.1f} MB gzip, "
              f"{self.layer_size(layer.blob) / 1e6:.1f} MB tar")

        def tar_xzf() -> float:
            d = tempfile.mkdtemp(dir=self.work)
            t = timed(["tar", "-xzf", str(blob), "-C", d])
            self.remove(d)
            return t

        def tar_xzf_topdir() -> float:
            # rl's layers/ is chattr +T (store.mark_layer_root): the same placement for tar,
            # to show how much of the difference is that alone
            d = tempfile.mkdtemp(dir=self.work)
            subprocess.run(["chattr", "+T", d], stderr=subprocess.DEVNULL)
            os.mkdir(os.path.join(d, "x"))
            t = timed(["tar", "-xzf", str(blob), "-C", os.path.join(d, "x")])
            self.remove(d)
            return t

        cmds: dict[str, Callable[[], float]] = {
            "rl pull (single layer, empty store)": lambda: self.rl_pull(ref)}
        if have("podman"):
            cmds["podman pull (single layer, empty store)"] = lambda: self.podman_pull(ref)
        cmds["tar -xzf (the same layer, empty dir)"] = tar_xzf
        if have("chattr"):
            cmds["tar -xzf (into a new dir below a +T dir)"] = tar_xzf_topdir
        samples: dict[str, list[float]] = {}
        reference = "podman pull (single layer, empty store)" if have("podman") else list(cmds)[-1]
        compare("single-layer pull", cmds, max(3, self.runs // 2), reference, samples)
        print("  the same rounds against tar -xzf (of medians / paired):")
        ratios_to(samples, "tar -xzf (the same layer, empty dir)")

    def rl_pull(self, image: str) -> float:
        d = tempfile.mkdtemp(dir=self.work)
        env = dict(self.env, XDG_DATA_HOME=d)
        t = timed(self.rl("pull", "-q", "--tls-verify=false", image), env)
        subprocess.run(self.rl("rmi", "-f", image), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["rl", "image", "prune"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.remove(d)
        return t

    def podman_pull(self, image: str) -> float:
        d = tempfile.mkdtemp(dir=self.work)
        root, runroot = os.path.join(d, "root"), os.path.join(d, "runroot")
        base = [*PODMAN, "--root", root, "--runroot", runroot, "--storage-driver", "overlay"]
        t = timed([*base, "pull", "-q", "--tls-verify=false", image])
        self.remove(d)
        return t

    def remove(self, d: str) -> None:
        """Remove a store or tree (subordinate owners need the user namespace); every
        measured command starts on the same disk state: right after such a removal."""
        if have("podman"):
            subprocess.run(["podman", "unshare", "rm", "-rf", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(d, ignore_errors=True)

    @staticmethod
    def layer_size(blob: bytes) -> int:
        import zlib

        return len(zlib.decompress(blob, wbits=31))

    def push_big_image(self, reg: str) -> None:
        """A ~100 MB image (~30 MB compressed): several layers of real files (the host's /usr/lib/python3, /usr/share
        locale data...), pushed with rl's own registry client."""
        if getattr(self, "_big_pushed", False):
            return
        self._big_pushed = True
        self.image_builder().push_big_image(reg, insecure=True)

    def image_builder(self):  # noqa: ANN201 - a module loaded from a path
        """scripts/build_test_images.py as a module (scripts/ is not a package)."""
        if "build_test_images" in sys.modules:
            return sys.modules["build_test_images"]
        sys.path.insert(0, str(REPO))
        import importlib.util

        spec = importlib.util.spec_from_file_location("build_test_images", REPO / "scripts" / "build_test_images.py")
        assert spec and spec.loader
        bti = importlib.util.module_from_spec(spec)
        sys.modules["build_test_images"] = bti  # dataclasses look their module up there
        spec.loader.exec_module(bti)
        return bti

    # -- build and push ---------------------------------------------------------------------
    def buildah(self) -> list[str]:
        """buildah with storage of its own in the bench's directory (runc: see PODMAN)."""
        return ["buildah", "--root", str(self.work / "bh-root"), "--runroot", str(self.work / "bh-run"),
                "--storage-driver", "overlay"]

    def package_index(self) -> str:
        """A PEP 503 index on 127.0.0.1 serving the wheels Debian ships for pip, setuptools and
        wheel (tests/integration/test_build_pyapp.py does the same)."""
        import functools
        import http.server
        import threading

        root = self.work / "index"
        for wheel in Path("/usr/share/python-wheels").glob("*.whl"):
            project = root / wheel.name.split("-")[0].lower()
            project.mkdir(parents=True, exist_ok=True)
            shutil.copy(wheel, project / wheel.name)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/"

    def build(self) -> None:
        if not have("buildah"):
            print("  (buildah not installed: no build baseline)")
            return
        reg = self.start_registry()
        self.image_builder().push_python_images(reg)
        index = self.package_index()
        app = str(REPO / "tests" / "pyapp")
        args = ["--network", "host", "--build-arg", f"REGISTRY={reg}", "--build-arg", f"INDEX_URL={index}"]
        for base in ("python:3.11", "python:3.11-slim"):  # the bases are there before the clock starts
            subprocess.run(self.rl("pull", "-q", "--tls-verify=false", f"{reg}/rltest/{base}"), check=True,
                           env=self.env, stdout=subprocess.DEVNULL)
            subprocess.run([*self.buildah(), "pull", "-q", "--tls-verify=false", f"{reg}/rltest/{base}"],
                           check=True, stdout=subprocess.DEVNULL)
        bh = [*self.buildah(), "bud", "--runtime", "runc", "--isolation", "rootless", "--tls-verify=false", "-q"]
        rl_build = self.rl("build", "--tls-verify=false", "-q", *args)
        cold: dict[str, Callable[[], float]] = {
            "rl build --no-cache (multi-stage Python app)": lambda: timed([*rl_build, "--no-cache", "-t", "cold", app], self.env),
            "buildah bud (multi-stage Python app)": lambda: timed([*bh, *args, "-t", "cold", app]),
        }
        compare("cold build", cold, max(3, self.runs // 3), "buildah bud (multi-stage Python app)")
        cached: dict[str, Callable[[], float]] = {
            "rl build (fully cached)": lambda: timed([*rl_build, "-t", "cached", app], self.env),
            "buildah bud --layers (fully cached)": lambda: timed([*bh, "--layers", *args, "-t", "cached", app]),
        }
        compare("rebuild of the unchanged Containerfile", cached, self.runs, "buildah bud --layers (fully cached)")

    def push(self) -> None:
        reg = self.start_registry()
        self.push_big_image(reg)
        big = f"{reg}/rltest/big:latest"
        subprocess.run(self.rl("pull", "-q", "--tls-verify=false", big), check=True, env=self.env,
                       stdout=subprocess.DEVNULL)
        podman = [*PODMAN, "--root", str(self.work / "pm-root"), "--runroot", str(self.work / "pm-run"),
                  "--storage-driver", "overlay"]
        have_podman = have("podman")
        if have_podman:
            subprocess.run([*podman, "pull", "-q", "--tls-verify=false", big], check=True, stdout=subprocess.DEVNULL)

        def to_empty_registry(push: Callable[[str], list[str]], env: dict[str, str] | None) -> float:
            d = tempfile.mkdtemp(dir=self.work)
            out = subprocess.run([str(REPO / "scripts" / "local-registry.sh"), "start", d], check=True,
                                 capture_output=True, text=True)
            try:
                return timed(push(f"{out.stdout.strip()}/pushed/big:latest"), env)
            finally:
                subprocess.run([str(REPO / "scripts" / "local-registry.sh"), "stop", d])
                shutil.rmtree(d, ignore_errors=True)

        cmds: dict[str, Callable[[], float]] = {
            "rl push (~100 MB, 4 layers, empty registry)":
                lambda: to_empty_registry(lambda dest: self.rl("push", "-q", "--tls-verify=false", big, dest), self.env),
        }
        if have_podman:
            cmds["podman push (~100 MB, 4 layers, empty registry)"] = lambda: to_empty_registry(
                lambda dest: [*podman, "push", "-q", "--tls-verify=false", big, dest], None)
        compare("push to an empty local registry", cmds, max(3, self.runs // 2), list(cmds)[-1])

    def lifecycle(self) -> None:
        bb = str(self.rootfs)
        n_seq = 100

        def rl_seq() -> float:
            start = time.perf_counter()
            for _ in range(n_seq):
                subprocess.run(self.rl("run", "--rm", "--network", "none", "--rootfs", bb, "true"), env=self.env, check=True)
            return time.perf_counter() - start

        def podman_seq() -> float:
            start = time.perf_counter()
            for _ in range(n_seq):
                subprocess.run([*PODMAN, "run", "--rm", "--runtime", "runc", "--network=none", self.podman_ref, "true"],
                               check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - start

        cmds: dict[str, Callable[[], float]] = {f"{n_seq} × rl run --rm": rl_seq}
        if self.podman_image():
            cmds[f"{n_seq} × podman run --rm"] = podman_seq
        compare("sequential runs", cmds, 1, list(cmds)[-1])

        def parallel(argv: list[str], n: int = 20) -> tuple[float, int]:
            start = time.perf_counter()
            procs = [subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(n)]
            failures = sum(1 for p in procs if p.wait() != 0)
            return time.perf_counter() - start, failures

        t, fails = parallel(self.rl("run", "--rm", "--network", "none", "--rootfs", bb, "true"))
        print(f"\n## 20 parallel rl run --rm: {t * 1000:.0f} ms, {fails} failures")
        if self.podman_image():
            t2, fails2 = parallel([*PODMAN, "run", "--rm", "--runtime", "runc", "--network=none", self.podman_ref, "true"])
            print(f"   20 parallel podman run --rm: {t2 * 1000:.0f} ms, {fails2} failures (ratio ×{t / t2:.3f})")
        # rl ps with 200 containers (exited, kept)
        env = dict(self.env, XDG_DATA_HOME=tempfile.mkdtemp(dir=self.work))
        for _ in range(200):
            subprocess.run(self.rl("run", "--network", "none", "--rootfs", bb, "true"), env=env, check=True)
        cmds = {"rl ps -a (200 containers)": lambda: timed(self.rl("ps", "-a"), env)}
        compare("listing", cmds, self.runs, "rl ps -a (200 containers)")

    def network(self) -> None:
        bb = str(self.rootfs)
        cmds: dict[str, Callable[[], float]] = {}
        # What a user types: an image, rl's default network (slirp4netns when installed, else pasta).
        reg = self.start_registry()
        image = f"{reg}/rltest/busybox:latest"
        subprocess.run(self.rl("pull", "-q", "--tls-verify=false", image), check=True, env=self.env,
                       stdout=subprocess.DEVNULL)
        cmds["rl run IMAGE (default network)"] = lambda: timed(self.rl("run", "--rm", image, "true"), self.env)
        for mode in ("pasta", "slirp4netns"):
            if have(mode):
                cmds[f"rl run --network {mode}"] = (
                    lambda m=mode: timed(self.rl("run", "--rm", "--network", m, "--rootfs", bb, "true"), self.env))
        ref = None
        if self.podman_image() and have("slirp4netns"):
            # podman 4.3's default rootless network is slirp4netns (it has no pasta support).
            ref = "podman run (default: slirp4netns)"
            cmds[ref] = lambda: timed([*PODMAN, "run", "--rm", "--runtime", "runc",
                                       self.podman_ref, "true"])
        if cmds:
            compare("start-up with networking on", cmds, self.runs, ref or list(cmds)[0])
        self.throughput()

    def throughput(self) -> None:
        """TCP from the container to iperf3 on the host's loopback, through the same helper
        (slirp4netns with allow_host_loopback: the host is 10.0.2.2 inside)."""
        if not (have("iperf3") and have("slirp4netns")):
            print("  (iperf3 or slirp4netns missing: no throughput figures)")
            return
        port = 15201
        server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        iperf = shutil.which("iperf3") or "/usr/bin/iperf3"
        libs = [ln.split("=>")[-1].split()[0] for ln in subprocess.run(["ldd", iperf], capture_output=True, text=True).stdout.splitlines()
                if "=>" in ln and "/" in ln.split("=>")[-1]]
        binds: list[str] = ["-v", f"{iperf}:/usr/bin/iperf3:ro"]
        for lib in libs + ["/lib64/ld-linux-x86-64.so.2"]:
            if os.path.exists(lib):
                binds += ["-v", f"{os.path.realpath(lib)}:{lib}:ro"]
        client = ["/usr/bin/iperf3", "-c", "10.0.2.2", "-p", str(port), "-t", "3", "-J"]

        def rate(argv: list[str]) -> float:
            import json

            # rl with the bench's isolated XDG dirs; podman with its own default storage.
            out = subprocess.run(argv, capture_output=True, text=True,
                                 env=self.env if argv[0] == "rl" else None)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-300:])
            return float(json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e6

        try:
            results: dict[str, list[float]] = {"rl (slirp4netns)": [], "podman (slirp4netns)": []}
            for _ in range(3):
                results["rl (slirp4netns)"].append(rate(self.rl(
                    "run", "--rm", "--network", "slirp4netns:allow_host_loopback=true", *binds,
                    "--rootfs", str(self.rootfs), *client)))
                if self.podman_image():
                    results["podman (slirp4netns)"].append(rate([
                        *PODMAN, "run", "--rm", "--runtime", "runc",
                        "--network", "slirp4netns:allow_host_loopback=true", *binds,
                        self.podman_ref, *client]))
        finally:
            server.terminate()
            server.wait()
        print("\n## TCP throughput container -> host loopback (iperf3, 3 s, median of 3, Mbit/s)")
        rl_med = statistics.median(results["rl (slirp4netns)"])
        print(f"  rl (slirp4netns)      {rl_med:9.0f}")
        if results["podman (slirp4netns)"]:
            pm = statistics.median(results["podman (slirp4netns)"])
            print(f"  podman (slirp4netns)  {pm:9.0f}   rl/podman ×{rl_med / pm:.2f}")

    # -- rl-oci ------------------------------------------------------------------------------
    def oci(self) -> None:
        """rl-oci against runc on one rootless bundle, podman with either runtime, and the
        runtime-tools validation suite (rl-oci against crun) when it is built on this machine."""
        if not have("rl-oci"):
            print("\n## oci: rl-oci is not on PATH")
            return
        bundle = self.work / "oci-bundle"
        bundle.mkdir(exist_ok=True)
        (bundle / "config.json").unlink(missing_ok=True)
        if have("runc"):
            # runc's rootless default (user namespace, your id as root, no network namespace),
            # used as it is by both runtimes.
            subprocess.run(["runc", "spec", "--rootless", "--bundle", str(bundle)], check=True)
        else:
            subprocess.run(["rl-oci", "spec", "--bundle", str(bundle)], check=True)
        import json

        config = json.loads((bundle / "config.json").read_text())
        config["root"] = {"path": str(self.rootfs), "readonly": True}
        config["process"].update(args=["true"], terminal=False)
        (bundle / "config.json").write_text(json.dumps(config))
        roots = {name: self.work / f"oci-root-{name}" for name in ("rl-oci", "runc")}
        counter = iter(range(10**6))

        def run(runtime: str) -> float:
            return timed([runtime, "--root", str(roots[runtime]), "run", "--bundle", str(bundle),
                          f"bench-{next(counter)}"], self.env)

        cmds: dict[str, Callable[[], float]] = {"rl-oci run (busybox bundle, true)": lambda: run("rl-oci")}
        if have("runc"):
            cmds["runc run (same bundle)"] = lambda: run("runc")
        compare("OCI runtime: run `true` on one bundle", cmds, self.runs, list(cmds)[-1])
        if self.podman_image():
            rl_oci = shutil.which("rl-oci") or "rl-oci"
            for label, net in (("--network none", ["--network=none"]), ("default network", [])):
                cmds = {
                    f"podman --runtime rl-oci run --rm ({label})": lambda n=net: timed(
                        [*PODMAN, "--runtime", rl_oci, "run", "--rm", *n, self.podman_ref, "true"]),
                    f"podman --runtime runc run --rm ({label})": lambda n=net: timed(
                        [*PODMAN, "--runtime", "runc", "run", "--rm", *n, self.podman_ref, "true"]),
                }
                compare(f"podman with either runtime ({label})", cmds, self.runs, list(cmds)[-1])
        self.runtime_tools()

    def runtime_tools(self) -> None:
        """The whole runtime-tools validation run, timed, rl-oci against crun: only when the
        suite is built on this machine (RL_RUNTIME_TOOLS, default /var/tmp/ext/runtime-tools);
        this script never builds it. Its programs are copied (runtimetest must be the user's
        own: the suite copies it into each bundle keeping its owner)."""
        suite = Path(os.environ.get("RL_RUNTIME_TOOLS", "/var/tmp/ext/runtime-tools"))
        programs = sorted(suite.glob("validation/*/*.t"))
        if not programs or not (suite / "runtimetest").exists():
            print(f"\n## runtime-tools: not built at {suite}: skipped")
            return
        copy = self.work / "runtime-tools"
        for path in [suite / "runtimetest", *suite.glob("rootfs-*.tar.gz"), *programs]:
            dest = copy / path.relative_to(suite)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
        # crun 1.8.1 refuses this host's hybrid cgroups; it runs as root of a user namespace
        # with the user's subordinate ids and the unified mount hidden (how crun runs its own
        # rootless tests), one namespace per program.
        crun_wrap = ["unshare", "--map-root-user", "--map-auto", "-m", "sh", "-c",
                     'mount -t tmpfs tmpfs /sys/fs/cgroup/unified && exec "$@"', "sh"]
        runs = {"rl-oci": ([], shutil.which("rl-oci") or "rl-oci")}
        if have("crun"):
            runs["crun (in a user namespace)"] = (crun_wrap, "crun")
        print(f"\n## runtime-tools validation, {len(programs)} programs, one run each")
        for label, (wrap, runtime) in runs.items():
            passed, start = 0, time.perf_counter()
            for program in programs:
                try:
                    out = subprocess.run([*wrap, str(copy / program.relative_to(suite))],
                                         cwd=copy, capture_output=True, text=True, timeout=120,
                                         env=dict(self.env, RUNTIME=runtime))
                except subprocess.TimeoutExpired:
                    continue
                lines = out.stdout.splitlines()
                ok = sum(1 for ln in lines if ln.startswith("ok") and "# skip" not in ln.lower())
                failed = any(ln.startswith("not ok") for ln in lines)
                # passes: exit 0, no failed assertion, and an ok (or, for the programs that
                # only check that the runtime refused, no error diagnostic either)
                if out.returncode == 0 and not failed and (ok or '"error"' not in out.stdout):
                    passed += 1
            took = time.perf_counter() - start
            print(f"  {label:<28} {passed:3d} of {len(programs)} pass   whole run {took:6.1f} s")


def rerun_as_user(args: argparse.Namespace) -> int:
    """As root: install rl (not editable: an editable install adds ~15 ms of import hooks to
    every start) from a copy of this checkout into a venv the user can read, then run there."""
    user = os.environ.get("RL_BENCH_USER", "rltest")
    # RL_BENCH_BASE: a directory of one's own, for benchmarks of two checkouts side by side.
    base = Path(os.environ.get("RL_BENCH_BASE", "/var/tmp/rl-bench"))
    src, venv = base / "src", base / "venv"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    subprocess.run(f"tar -C {REPO} --exclude=./.git --exclude='./.venv*' -cf - . | tar -C {src} -xf -",
                   shell=True, check=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(src)],
                   check=True, stderr=subprocess.DEVNULL)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    uid = subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout.strip()
    home = subprocess.run(["getent", "passwd", user], capture_output=True, text=True, check=True).stdout.split(":")[5]
    print(f"bench: running as {user} (rl is for unprivileged users)", file=sys.stderr)
    path = f"{venv}/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    return subprocess.call(["runuser", "-u", user, "--", "env", "-i", f"PATH={path}", f"HOME={home}",
                            f"XDG_RUNTIME_DIR=/run/user/{uid}", "LANG=C.UTF-8", str(venv / "bin" / "python"),
                            str(src / "scripts" / "bench.py"), "--runs", str(args.runs), *args.sections], cwd="/tmp")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("sections", nargs="*", default=["startup", "seccomp", "pull", "lifecycle", "network",
                                                        "oci", "build", "push"])
    args = parser.parse_args()
    if os.geteuid() == 0:
        return rerun_as_user(args)
    if not have("rl"):
        print("bench: rl is not on PATH", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="rl-bench-") as tmp:
        bench = Bench(args.runs, Path(tmp))
        try:
            for section in args.sections:
                try:
                    getattr(bench, section)()
                except Exception as exc:  # noqa: BLE001 - one section failing must not hide the others
                    print(f"\n## {section}: failed: {exc}")
        finally:
            bench.stop()
            subprocess.run(["podman", "unshare", "rm", "-rf", str(Path(tmp))], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) if have("podman") else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
