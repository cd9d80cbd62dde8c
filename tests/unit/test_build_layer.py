"""Layer blobs: the parallel gzip writer (pigz's scheme) gives one ordinary gzip member that
gzip readers take, the same bytes for the same input, and zstd round-trips too."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess

import pytest

from rootless.build.layer import Compressor, _ParallelGzip


def compress(data: bytes, fmt: str = "gzip", pieces: int = 7) -> tuple[bytes, str]:
    out = io.BytesIO()
    comp = Compressor(out, fmt)
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        comp.write(data[i:i + step])
    comp.finish()
    assert comp.size == len(out.getvalue())
    return out.getvalue(), comp.digest


SIZES = [0, 1, _ParallelGzip.BLOCK - 1, _ParallelGzip.BLOCK, 3 * _ParallelGzip.BLOCK + 17]


@pytest.mark.parametrize("size", SIZES)
def test_parallel_gzip_round_trips(size: int) -> None:
    # text that repeats across block boundaries (the dictionary matters) and noise
    data = (b"layer tar bytes %d " * (size // 16 + 1))[:size // 2] + os.urandom(size - size // 2)
    blob, digest = compress(data)
    assert gzip.decompress(blob) == data
    assert blob[:2] == b"\x1f\x8b"
    assert compress(data, pieces=3) == (blob, digest)  # however it is fed


def test_parallel_gzip_is_one_member_the_gzip_tool_accepts(tmp_path) -> None:
    data = b"".join(b"line %d of a text file\n" % i for i in range(300_000))
    blob, _ = compress(data)
    path = tmp_path / "layer.gz"
    path.write_bytes(blob)
    gz = shutil.which("gzip")
    assert gz is not None
    out = subprocess.run([gz, "-dc", str(path)], capture_output=True, check=True).stdout
    assert out == data
    assert len(blob) < len(data) // 5  # the dictionary carries over: it compresses as one


def test_zstd_round_trips() -> None:
    import zstandard

    data = os.urandom(100_000) + b"x" * 3_000_000
    blob, _ = compress(data, "zstd")
    assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == data
