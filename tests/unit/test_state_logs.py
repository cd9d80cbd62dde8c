"""The log format, its size cap, --since/--tail, restart policies and --format templates."""

from __future__ import annotations

import os
import threading
import time

import pytest

from rootless.cli.container_cmds import human_duration, render
from rootless.errors import UsageError
from rootless.runtime import logs
from rootless.runtime.monitor import parse_restart


def write_through_pump(tmp_path, chunks, cap=None):
    path = str(tmp_path / "ctr.log")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()

    def feed() -> None:
        for stream, data in chunks:
            fd = out_w if stream == "stdout" else err_w
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        os.close(out_w)
        os.close(err_w)

    writer = threading.Thread(target=feed)
    writer.start()
    logs.logger_main(out_r, err_r, path, cap)
    writer.join()
    return path


def test_records_round_trip_bytes_and_streams(tmp_path):
    path = write_through_pump(tmp_path, [("stdout", b"one\ntwo\r\n\tthree"), ("stderr", b"e1\n")])
    recs = logs.read_all(path)
    out = b"".join(r.output() for r in recs if r.stream == "stdout")
    err = b"".join(r.output() for r in recs if r.stream == "stderr")
    assert out == b"one\ntwo\r\n\tthree" and err == b"e1\n"
    assert [r.partial for r in recs if r.stream == "stdout"] == [False, False, True]


def test_long_lines_are_split_into_partial_records(tmp_path):
    line = b"x" * (logs.MAX_RECORD * 2 + 10) + b"\n"
    path = write_through_pump(tmp_path, [("stdout", line)])
    recs = logs.read_all(path)
    assert len(recs) == 3 and b"".join(r.output() for r in recs) == line


def test_cap_keeps_the_newest_whole_lines_within_the_cap(tmp_path):
    data = b"".join(b"%07d\n" % i for i in range(50000))
    path = write_through_pump(tmp_path, [("stdout", data)], cap=64 * 1024)
    total = sum(os.path.getsize(p) for p in (path, path + ".1") if os.path.exists(p))
    assert total <= 64 * 1024
    lines = b"".join(r.output() for r in logs.read_all(path)).splitlines()
    first = int(lines[0])
    assert lines == [b"%07d" % i for i in range(first, 50000)]


def test_tail_and_since():
    recs, rest = logs.parse_records(
        b"2026-01-01T00:00:00.000000000Z stdout F a\n"
        b"2026-01-01T00:00:01.000000000Z stdout P b\n"
        b"2026-01-01T00:00:02.000000000Z stdout F c\n"
        b"2026-01-01T00:00:03.000000000Z stderr F d\n"
        b"2026-01-01T00:00:04.0000")
    assert rest == b"2026-01-01T00:00:04.0000"
    text = lambda rs: b"".join(r.output() for r in rs)  # noqa: E731
    assert text(logs.select_records(recs, 2, None)) == b"bc\nd\n"
    assert text(logs.select_records(recs, 0, None)) == b""
    since = logs.parse_since("2026-01-01T00:00:02Z")
    assert text(logs.select_records(recs, None, since)) == b"c\nd\n"
    assert logs.parse_since("10m", now=1000.0) == 400.0
    assert logs.parse_since("1h30m", now=10000.0) == 10000.0 - 5400
    assert logs.parse_since("1700000000") == 1700000000.0
    with pytest.raises(UsageError):
        logs.parse_since("yesterday")


def test_log_opts():
    assert logs.parse_log_opts([]) is None
    assert logs.parse_log_opts(["max-size=1m"]) == 1 << 20
    assert logs.parse_log_opts(["max-size=10k", "max-size=-1"]) is None
    for bad in (["max-size=1k"], ["max-size=big"], ["mode=non-blocking"], ["path=/x"]):
        with pytest.raises(UsageError):
            logs.parse_log_opts(bad)


def test_restart_policies():
    p = parse_restart("on-failure:2")
    assert [p.wants_restart(1, n) for n in range(3)] == [True, True, False]
    assert not p.wants_restart(0, 0)
    assert parse_restart("on-failure").wants_restart(1, 100)
    assert not parse_restart("no").wants_restart(1, 0)
    assert parse_restart("always").wants_restart(0, 5)
    for bad in ("sometimes", "on-failure:x", "on-failure:-1", "always:3"):
        with pytest.raises(UsageError):
            parse_restart(bad)


def test_templates():
    obj = {"Name": "web", "State": {"Status": "running", "Pid": 7, "Running": True},
           "Names": ["a", "b"], "Labels": {"k": "v"}}
    assert render("{{.Name}} {{ .State.Status }} {{.State.Pid}}", obj) == "web running 7"
    assert render("{{json .State}}", obj) == '{"Status": "running", "Pid": 7, "Running": true}'
    assert render("{{.State.Running}}\\t{{.Names}}", obj) == "true\t[a b]"
    assert render("{{.Labels}}", obj) == "map[k:v]"
    assert render("{{.state.status}}", obj) == "running"
    with pytest.raises(UsageError):
        render("{{.Nope}}", obj)


def test_human_duration_matches_docker():
    assert human_duration(0.2) == "Less than a second"
    assert human_duration(1) == "1 second"
    assert human_duration(45) == "45 seconds"
    assert human_duration(90) == "About a minute"
    assert human_duration(600) == "10 minutes"
    assert human_duration(3600) == "About an hour"
    assert human_duration(5 * 3600) == "5 hours"
    assert human_duration(3 * 86400) == "3 days"
    assert time.time() > 0
