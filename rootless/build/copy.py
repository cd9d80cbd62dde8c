"""COPY and ADD into the working tree, without a container (the Dockerfile reference's rules):

- a source directory's *contents* are copied, not the directory itself;
- a file goes to DEST/basename when DEST ends in `/` or is an existing directory, else to
  DEST itself; several sources (or a wildcard) need a directory DEST ending in `/`;
- a relative DEST is relative to WORKDIR; missing parents are created (0755);
- files keep their permission bits and mtime; owners are 0:0 unless --chown (names are
  looked up in the image's own /etc/passwd and /etc/group); --chmod sets the mode;
- a source that is itself a symlink is followed (inside its root); symlinks below it are
  copied as links; hard links within one COPY stay hard links;
- ADD of a local tar archive (plain, gzip, bzip2 or xz) extracts it into DEST with the
  archive's owners; ADD of a URL stores the download with mode 0600.

Source paths are resolved like the kernel would inside the source root (rootless.runtime.
mounts.secure_join), so no symlink in the context or in another stage leads outside it.
Everything below runs as root in the build's user namespace, on the mounted merged view.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import shutil
import stat
from dataclasses import dataclass, field

from rootless.build.errors import BuildError
from rootless.build.ignore import Matcher, compile_pattern
from rootless.primitives.mounts import secure_join

_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class CopyJob:
    """What one COPY/ADD does, decided outside the sandbox (plain data: it crosses a fork)."""

    sources: list[str]  # relative paths in src_root after glob expansion ("" = the root)
    src_root: str  # the context directory or a mounted stage/image
    dest: str  # absolute path in the image; a trailing "/" is kept
    wildcard: bool = False
    chown: str | None = None  # as written: resolved in the image's passwd/group
    chmod: int | None = None
    add: bool = False
    files: dict[str, bytes] = field(default_factory=dict)  # heredocs, downloads: name → data
    file_modes: dict[str, int] = field(default_factory=dict)
    file_mtimes: dict[str, float] = field(default_factory=dict)
    ignore_text: str | None = None  # the context's ignore file, applied below directories


def has_glob(pattern: str) -> bool:
    return bool(_GLOB_CHARS.search(pattern))


def expand(root: str, pattern: str, matcher: Matcher | None) -> list[str]:
    """Relative paths under root matching pattern (Go filepath.Match per component)."""
    clean = posixpath.normpath("/" + pattern).lstrip("/")
    if not clean or clean == ".":
        return [""]
    if not has_glob(clean):
        host = secure_join(root, clean)
        if not os.path.lexists(host) or (matcher is not None and matcher.excluded(clean)):
            return []
        return [clean]
    found = [""]
    for comp in clean.split("/"):
        nxt = []
        if not has_glob(comp):
            for base in found:
                cand = f"{base}/{comp}" if base else comp
                if os.path.lexists(os.path.join(root, cand)):
                    nxt.append(cand)
        else:
            regex = compile_pattern(comp)
            for base in found:
                try:
                    names = sorted(os.listdir(os.path.join(root, base) if base else root))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                nxt.extend(f"{base}/{n}" if base else n for n in names if regex.match(n))
        found = nxt
    if matcher is not None:
        found = [f for f in found if not matcher.excluded(f)]
    return found


def resolve_owner(merged: str, chown: str | None) -> tuple[int, int] | None:
    """--chown USER[:GROUP] against the image's files; a lone user gives gid = its uid."""
    if not chown:
        return None
    from rootless.runtime.users import resolve_user

    user, sep, group = chown.partition(":")
    passwd, grp = secure_join(merged, "/etc/passwd"), secure_join(merged, "/etc/group")
    try:
        resolved = resolve_user(chown if sep else user, passwd, grp)
    except BuildError:
        raise
    except Exception as exc:  # RlError from resolve_user: name the flag
        raise BuildError(f"--chown={chown}: {exc}") from None
    if not sep:
        return resolved.uid, resolved.uid if user.isdigit() else resolved.gid
    return resolved.uid, resolved.gid


class Copier:
    """Copies entries into `merged`, remembering directory times to set last."""

    def __init__(self, merged: str, owner: tuple[int, int] | None, chmod: int | None,
                 matcher: Matcher | None) -> None:
        self.merged = merged
        self.owner = owner
        self.chmod = chmod
        self.matcher = matcher
        self.links: dict[tuple[int, int], str] = {}
        self.dir_times: list[tuple[str, int]] = []
        self.ways = ["copy_file_range", "sendfile", "rw"]  # see _copy_fd

    # -- destinations ---------------------------------------------------------------------
    def target(self, path: str) -> str:
        return secure_join(self.merged, path)

    def make_parents(self, path: str) -> None:
        """mkdir -p of the image path's parent directories (0755, owner by --chown or root)."""
        parts = [p for p in path.split("/") if p][:-1]
        current = ""
        for part in parts:
            current += "/" + part
            host = self.target(current)
            if os.path.isdir(host):
                continue
            if os.path.lexists(host):
                os.unlink(host)
            os.mkdir(host, 0o755)
            uid, gid = self.owner or (0, 0)
            os.lchown(host, uid, gid)

    def _replace(self, host: str, is_dir: bool) -> bool:
        """Clear what is at host unless it is a directory and a directory is wanted; True
        when a directory already exists there."""
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return True
            shutil.rmtree(host)
        else:
            os.unlink(host)
        return False

    # -- entries --------------------------------------------------------------------------
    def copy_entry(self, src: str, st: os.stat_result, dest: str, rel: str | None) -> None:
        """Copy src (lstat st) to the image path dest; rel is its context path (ignore)."""
        host = self.target(dest)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            existed = self._replace(host, True)
            if not existed:
                os.mkdir(host, 0o700)
            self._meta(host, st, set_mode=True)
            self.copy_children(src, dest, rel)
            self.dir_times.append((host, st.st_mtime_ns))
            return
        self._replace(host, False)
        key = (st.st_dev, st.st_ino)
        if stat.S_ISREG(mode) and st.st_nlink > 1 and key in self.links:
            os.link(self.links[key], host)
            return
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), host)
        elif stat.S_ISREG(mode):
            self._copy_file(src, host)
            if st.st_nlink > 1:
                self.links[key] = host
        elif stat.S_ISFIFO(mode):
            os.mkfifo(host, 0o600)
        else:
            return  # devices and sockets: never part of a COPY
        self._meta(host, st, set_mode=not stat.S_ISLNK(mode))
        os.utime(host, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)

    def copy_children(self, src: str, dest: str, rel: str | None) -> None:
        for name in sorted(os.listdir(src)):
            child_rel = f"{rel}/{name}" if rel else name
            if rel is not None and self.matcher is not None and self.matcher.excluded(child_rel):
                if not (os.path.isdir(os.path.join(src, name))
                        and self.matcher.may_include_below(child_rel)):
                    continue
                self.copy_excluded_dir(os.path.join(src, name), f"{dest.rstrip('/')}/{name}",
                                       child_rel)
                continue
            path = os.path.join(src, name)
            self.copy_entry(path, os.lstat(path), f"{dest.rstrip('/')}/{name}",
                            child_rel if rel is not None else None)

    def copy_excluded_dir(self, src: str, dest: str, rel: str) -> None:
        """An excluded directory with an exception below it: only what comes back is copied
        (and the directories leading to it)."""
        assert self.matcher is not None
        for name in sorted(os.listdir(src)):
            child_rel = f"{rel}/{name}"
            path = os.path.join(src, name)
            st = os.lstat(path)
            if not self.matcher.excluded(child_rel):
                self.make_parents(f"{dest}/{name}")
                self.copy_entry(path, st, f"{dest}/{name}", child_rel)
            elif stat.S_ISDIR(st.st_mode) and self.matcher.may_include_below(child_rel):
                self.copy_excluded_dir(path, f"{dest}/{name}", child_rel)

    def _copy_file(self, src: str, host: str) -> None:
        fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fd_out = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
            try:
                _copy_fd(fd_in, fd_out, self.ways)
            finally:
                os.close(fd_out)
        finally:
            os.close(fd_in)

    def _meta(self, host: str, st: os.stat_result, *, set_mode: bool) -> None:
        uid, gid = self.owner or (0, 0)
        os.lchown(host, uid, gid)
        if set_mode:
            mode = self.chmod if self.chmod is not None else stat.S_IMODE(st.st_mode)
            os.chmod(host, mode)

    def write_bytes(self, dest: str, data: bytes, mode: int, mtime: float | None) -> None:
        host = self.target(dest)
        self._replace(host, False)
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        uid, gid = self.owner or (0, 0)
        os.lchown(host, uid, gid)
        os.chmod(host, self.chmod if self.chmod is not None else mode)
        if mtime is not None:
            os.utime(host, (mtime, mtime))

    def finish(self) -> None:
        for host, ns in reversed(self.dir_times):
            os.utime(host, ns=(ns, ns), follow_symlinks=False)


# errnos that say "not this way" for an in-kernel copy (any other is a real failure)
_NOT_THIS_WAY = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def _copy_fd(fd_in: int, fd_out: int, ways: list[str]) -> None:
    """Copy a whole file in the kernel: copy_file_range (a reflink or server-side copy on one
    filesystem), else sendfile (across filesystems: another stage's overlay is another
    superblock, where copy_file_range says EXDEV), else read/write. `ways` is the Copier's
    list, shortened when a way fails, so each later file tries only what can work."""
    while ways:
        way = ways[0]
        if way == "rw":
            break
        try:
            if way == "copy_file_range":
                while os.copy_file_range(fd_in, fd_out, 1 << 30):
                    pass
            else:
                while os.sendfile(fd_out, fd_in, None, 1 << 30):
                    pass
            return
        except OSError as exc:
            if exc.errno not in _NOT_THIS_WAY:
                raise
            ways.pop(0)
            os.lseek(fd_in, 0, os.SEEK_SET)
            os.lseek(fd_out, 0, os.SEEK_SET)
            os.ftruncate(fd_out, 0)
    while chunk := os.read(fd_in, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd_out, view):]


def is_archive(path: str) -> bool:
    """A tar, possibly gzip/bzip2/xz-compressed: what ADD extracts (by content, not name)."""
    import tarfile

    return tarfile.is_tarfile(path)


def extract_archive(path: str, merged: str, dest: str, owner: tuple[int, int] | None) -> None:
    """ADD of a local archive (plain tar, gzip, bzip2 or xz, by its first bytes) with
    rl's own unpacker, which never writes through a symlink; owners from the archive, or
    --chown's for every entry it made."""
    import bz2
    import lzma
    import tarfile

    from rootless.image.layerstream import LayerStream
    from rootless.image.unpack import Extractor

    host = secure_join(merged, dest)
    os.makedirs(host, exist_ok=True)
    with open(path, "rb") as f:
        magic = f.read(6)
    opener, compression = {b"\x1f\x8b": (open, "gzip"), b"BZ": (bz2.open, "none"),
                           b"\xfd7": (lzma.open, "none")}.get(magic[:2], (open, "none"))
    with opener(path, "rb") as raw:
        stream = LayerStream(raw, compression)
        extractor = Extractor(host)
        try:
            extractor.extract(stream)
        finally:
            extractor.close()
            stream.close()
    if owner is not None:
        with tarfile.open(path, "r:*") as tar:
            for name in tar.getnames():
                target = secure_join(host, name)
                if os.path.lexists(target):
                    os.lchown(target, *owner)


def run_copy(job: CopyJob, merged: str) -> None:
    """Apply job to the mounted working tree (as root in the build's user namespace)."""
    owner = resolve_owner(merged, job.chown)
    matcher = None
    if job.ignore_text is not None:
        from rootless.build.ignore import parse_ignore

        matcher = Matcher(parse_ignore(job.ignore_text))
    copier = Copier(merged, owner, job.chmod, matcher)
    dest = job.dest
    many = len(job.sources) + len(job.files) > 1 or job.wildcard
    dest_is_dir = dest.endswith("/") or os.path.isdir(copier.target(dest))
    if many and not dest.endswith("/") and not os.path.isdir(copier.target(dest)):
        raise BuildError("when using COPY with more than one source file, the destination must "
                         "be a directory and end with a /")
    for name, data in job.files.items():
        path = posixpath.join(dest, name) if dest_is_dir else dest
        copier.make_parents(path)
        copier.write_bytes(path, data, job.file_modes.get(name, 0o644), job.file_mtimes.get(name))
    for rel in job.sources:
        src = secure_join(job.src_root, rel) if rel else job.src_root
        st = os.stat(src)  # a named source that is a symlink is followed (in its root)
        ctx_rel = rel if matcher is not None else None
        if stat.S_ISDIR(st.st_mode):
            host = copier.target(dest)
            copier.make_parents(dest.rstrip("/") + "/x")
            if not os.path.isdir(host):
                if os.path.lexists(host):
                    os.unlink(host)
                os.mkdir(host, 0o755)
                copier._meta(host, st, set_mode=True)
                copier.dir_times.append((host, st.st_mtime_ns))
            copier.copy_children(src, dest, ctx_rel if ctx_rel is not None else None)
            continue
        if job.add and is_archive(src):
            extract_archive(src, merged, dest, owner)
            continue
        path = posixpath.join(dest, posixpath.basename(rel)) if dest_is_dir else dest
        copier.make_parents(path)
        copier.copy_entry(src, st, path, None)
    copier.finish()
