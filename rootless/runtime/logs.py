"""The log of a detached container: written by a logger process, read by `rl logs`.

Format: podman's k8s-file, one record per line,

    2026-11-25T18:24:36.279887400Z stdout F the line
    2026-11-25T18:24:36.279887400Z stderr P a partial line (no newline follows in the output)

so the exact bytes come back ("F" adds the newline, "P" does not) and each record keeps its
stream and time (`--since`). The size cap (`--log-opt max-size`) keeps the newest output: the
log rotates to `ctr.log.1` when it reaches half the cap, so both files together stay within it
and every record stays whole.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rootless.errors import UsageError

LOG_NAME = "ctr.log"
# Lines longer than this are split into P records (conmon uses the pipe's buffer size).
MAX_RECORD = 16384
DEFAULT_MAX_SIZE: int | None = None  # unlimited, as podman's default log_size_max


def log_path(paths: Any, cid: str) -> str:
    return f"{paths.containers}/{cid}/{LOG_NAME}"


def parse_size(text: str) -> int:
    """`1m`, `512k`, `2g`, `1000`, `1.5mb` -> bytes (docker's units: k=1024)."""
    t = text.strip().lower().rstrip("b").rstrip("i")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    mult = 1
    if t and t[-1] in units:
        mult = units[t[-1]]
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise UsageError(f"invalid size {text!r}: use a number with k, m or g") from None
    if value < 0:
        raise UsageError(f"invalid size {text!r}: must not be negative")
    return int(value * mult)


def parse_log_opts(opts: list[str]) -> int | None:
    """--log-opt values -> the size cap in bytes (None: no cap). Only max-size exists here;
    podman's other k8s-file options are refused rather than silently ignored."""
    cap = DEFAULT_MAX_SIZE
    for opt in opts:
        key, sep, value = opt.partition("=")
        if key == "max-size" and sep:
            cap = None if value.strip() in ("-1", "") else parse_size(value)
            if cap is not None and cap < 8192:
                raise UsageError(f"--log-opt max-size={value} is too small: give at least 8k")
        elif key == "path" and sep:
            raise UsageError("--log-opt path= is not supported: logs live in the container's storage")
        else:
            raise UsageError(f"invalid --log-opt {opt!r}: supported is max-size=SIZE")
    return cap


# -- writing ---------------------------------------------------------------------------------

def timestamp(now: float | None = None) -> str:
    now = time.time() if now is None else now
    secs = int(now)
    nanos = int((now - secs) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


class LogWriter:
    """Appends records to the log file, rotating at half the cap."""

    def __init__(self, path: str, cap: int | None) -> None:
        self.path = path
        self.cap = cap
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, stream: str, data: bytes, partial: bool) -> None:
        record = b"%s %s %s %s\n" % (timestamp().encode(), stream.encode(), b"P" if partial else b"F", data)
        if self.cap is not None and self.size + len(record) > self.cap // 2 and self.size:
            self.rotate()
        view = memoryview(record)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.size += len(record)

    def rotate(self) -> None:
        os.replace(self.path, self.path + ".1")
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.size = 0

    def close(self) -> None:
        os.close(self.fd)


def pump(streams: dict[int, str], writer: LogWriter) -> None:
    """Copy the container's stdout/stderr pipes into the log until every writer closed them."""
    import select

    pending = {fd: b"" for fd in streams}
    while pending:
        ready, _, _ = select.select(list(pending), [], [])
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except InterruptedError:
                continue
            buf = pending[fd] + chunk
            if not chunk:
                if buf:
                    writer.write(streams[fd], buf, partial=True)
                del pending[fd]
                os.close(fd)
                continue
            lines = buf.split(b"\n")
            for line in lines[:-1]:
                while len(line) > MAX_RECORD:
                    writer.write(streams[fd], line[:MAX_RECORD], partial=True)
                    line = line[MAX_RECORD:]
                writer.write(streams[fd], line, partial=False)
            rest = lines[-1]
            while len(rest) > MAX_RECORD:
                writer.write(streams[fd], rest[:MAX_RECORD], partial=True)
                rest = rest[MAX_RECORD:]
            pending[fd] = rest


def logger_main(out_r: int, err_r: int, path: str, cap: int | None) -> None:
    writer = LogWriter(path, cap)
    try:
        pump({out_r: "stdout", err_r: "stderr"}, writer)
    finally:
        writer.close()


# -- reading ---------------------------------------------------------------------------------

class Record:
    __slots__ = ("time", "stream", "data", "partial")

    def __init__(self, time_text: str, stream: str, data: bytes, partial: bool) -> None:
        self.time = time_text
        self.stream = stream
        self.data = data
        self.partial = partial

    def output(self) -> bytes:
        return self.data if self.partial else self.data + b"\n"


def parse_records(blob: bytes) -> tuple[list[Record], bytes]:
    """Whole records of blob, and the unterminated rest (a record being written)."""
    out = []
    lines = blob.split(b"\n")
    for line in lines[:-1]:
        parts = line.split(b" ", 3)
        if len(parts) < 3:
            continue
        data = parts[3] if len(parts) == 4 else b""
        out.append(Record(parts[0].decode(), parts[1].decode(), data, parts[2] == b"P"))
    return out, lines[-1]


def parse_since(text: str, now: float | None = None) -> float:
    """--since: a duration before now (10m, 1h30m, 45s), a unix time, or an RFC 3339 time."""
    import re

    now = time.time() if now is None else now
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if text and m and any(m.groups()):
        h, mi, s = (float(g or 0) for g in m.groups())
        return now - (h * 3600 + mi * 60 + s)
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime

    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"invalid --since {text!r}: give a duration (10m), a unix time or "
                         "an RFC 3339 time") from None
    return stamp.timestamp()


def record_time(rec: Record) -> float:
    from datetime import datetime, timezone

    text = rec.time.rstrip("Z")
    base, _, frac = text.partition(".")
    stamp = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


def read_all(path: str) -> list[Record]:
    records: list[Record] = []
    for name in (path + ".1", path):
        try:
            with open(name, "rb") as f:
                recs, _ = parse_records(f.read())
        except FileNotFoundError:
            continue
        records.extend(recs)
    return records


def select_records(records: list[Record], tail: int | None, since: float | None) -> list[Record]:
    if since is not None:
        records = [r for r in records if record_time(r) >= since]
    if tail is not None and tail >= 0:
        # --tail counts lines: a line is its P records plus the F record that ends it.
        ends = [i for i, r in enumerate(records) if not r.partial]
        if tail == 0:
            return []
        if len(ends) > tail:
            records = records[ends[-tail - 1] + 1:]
    return records


def emit(records: list[Record], out: Any, err: Any) -> None:
    for r in records:
        (err if r.stream == "stderr" else out).write(r.output())
    out.flush()
    err.flush()


def follow(path: str, start_offset: int, still_running: Any, out: Any, err: Any,
           interval: float = 0.1) -> None:
    """Print records appended after start_offset until the container stopped and its log is
    drained. Rotation is noticed by the file's inode changing."""
    fd: int | None = None
    ino = None
    offset = start_offset
    rest = b""

    def reopen() -> None:
        nonlocal fd, ino
        if fd is not None:
            os.close(fd)
            fd = None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            ino = os.fstat(fd).st_ino
        except FileNotFoundError:
            fd, ino = None, None

    def drain() -> bool:
        nonlocal offset, rest
        got = False
        while fd is not None:
            chunk = os.pread(fd, 65536, offset)
            if not chunk:
                break
            offset += len(chunk)
            got = True
            recs, rest = parse_records(rest + chunk)
            emit(recs, out, err)
        return got

    reopen()
    while True:
        running = still_running()
        got = drain()
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current != ino:
            drain()  # what was appended to the old file before it was renamed
            reopen()
            offset, rest = 0, b""
            continue
        if not running and not got:
            break
        if not got:
            time.sleep(interval)
    if fd is not None:
        os.close(fd)
