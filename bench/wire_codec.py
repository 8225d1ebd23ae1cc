"""Codec + chunk + frame speed of a 64 MiB float32 update against memcpy, measured in one run.

    .venv/bin/python bench/wire_codec.py [--repeat 3]

Sends and receives nothing: it times the CPU work on either side of the broker for one update
of 16M float32 weights (seeded, four tensors) cut into 64 KiB chunks.

- `encode_chunk_frame`: `encode_blob` (codec + sha256 + chunk views), then `wire.pack` of an
  `UpdateChunk` per chunk, handing each chunk's view to the frame (`data_copy=false`) or a
  `bytes(view)` copy as `edge_node/daemon.py` and `cloud/publisher.py` do (`data_copy=true`).
- `unpack_reassemble_decode`: `wire.unpack` of every frame, `Reassembler.add` (which verifies
  the sha256 on the last chunk), then `decode_blob`, as `cloud/intake.py` does.

Prints one JSON line per measurement. `mb_s` counts the 64 MiB of float32 weights (not the
blob, which is smaller for lossy codecs), best of `--repeat` runs. `vs_memcpy` = this speed /
the speed of `bytearray(src)` on the same 64 MiB: a copy into fresh memory, as every stage
allocates its output, which pays a page fault per 4 KiB. `vs_numpy_copy` uses numpy's copy
instead, whose allocation asks the kernel for huge pages and runs ~4x faster here: the
stricter baseline. `sha256_vs_memcpy` shows the floor: both stages must hash the whole blob
once. The issue's goal is f32 at >= 0.25x memcpy each way; the other registered codecs are
listed for information (`"info": true`).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from fedstream.shared.protocol import wire
from fedstream.shared.protocol.blobs import decode_blob, encode_blob
from fedstream.shared.protocol.chunks import DEFAULT_CHUNK_SIZE, Reassembler
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.messages import Spec, TensorSpec, UpdateChunk, UpdateMeta

# 16M float32 = 64 MiB, in a few tensors of a wide MLP's shape.
SPEC: Spec = (TensorSpec(name="l0.w", shape=(4096, 2048)),
              TensorSpec(name="l1.w", shape=(2048, 2048)),
              TensorSpec(name="l2.w", shape=(2048, 2047)),
              TensorSpec(name="l2.b", shape=(2048,)))
MIB = 1 << 20
META = UpdateMeta(edge_id="edge-0001", round_id="r-000042", base_version=41, samples=1200,
                  loss=0.3125)


def update(seed: int = 0) -> list[torch.Tensor]:
    """Seeded weights matching SPEC, scaled like a training delta."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*t.shape, generator=gen) * 0.01 for t in SPEC]


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Fewest seconds of `repeat` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def encode_frames(tensors: list[torch.Tensor], codec: str, *, data_copy: bool) -> list[bytes]:
    """The sender's CPU path: codec, sha256, chunk views, one msgpack frame per chunk."""
    enc = encode_blob(tensors, SPEC, codec=codec, chunk_size=DEFAULT_CHUNK_SIZE)
    header = enc.header
    return [wire.pack(UpdateChunk(header=header, meta=META, index=i,
                                  data=bytes(view) if data_copy else view))
            for i, view in enumerate(enc.chunks)]


def decode_frames(frames: list[bytes]) -> list[torch.Tensor]:
    """The receiver's CPU path: unpack, reassemble, verify the sha256, decode."""
    parts = Reassembler(max_blob_bytes=1 << 30, max_total_bytes=1 << 30, timeout_s=60.0)
    done = None
    for frame in frames:
        chunk = wire.unpack(frame)
        assert isinstance(chunk, UpdateChunk)
        done = parts.add(chunk.header, chunk.index, chunk.data, 0.0) or done
    assert done is not None, "blob never completed"
    tensors: list[torch.Tensor] = decode_blob(done.header, done.blob, SPEC)
    return tensors


def emit(line: dict[str, Any]) -> None:
    """One JSON line, flushed so a slow run shows progress."""
    print(json.dumps(line), flush=True)


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--codecs", nargs="*", default=None,
                        help="codecs to run (default: f32 first, then every registered codec)")
    args = parser.parse_args()
    tensors = update()
    nbytes = 4 * sum(t.numel for t in SPEC)
    src = b"".join(t.numpy().tobytes() for t in tensors)
    assert len(src) == nbytes == 64 * MIB

    memcpy_s = best_of(lambda: bytearray(src), 2 * args.repeat + 1)
    numpy_s = best_of(lambda: np.frombuffer(src, np.uint8).copy(), 2 * args.repeat + 1)
    sha_s = best_of(lambda: hashlib.sha256(src).digest(), args.repeat)
    mb = nbytes / MIB

    def ratios(seconds: float) -> dict[str, float]:
        return {"mb_s": round(mb / seconds, 1), "vs_memcpy": round(memcpy_s / seconds, 3),
                "vs_numpy_copy": round(numpy_s / seconds, 3)}

    emit({"stage": "memcpy", "how": "bytearray(src)", "mb_s": round(mb / memcpy_s),
          "numpy_copy_mb_s": round(mb / numpy_s), "bytes": nbytes,
          "torch_threads": torch.get_num_threads()})
    emit({"stage": "sha256", **ratios(sha_s), "sha256_vs_memcpy": round(memcpy_s / sha_s, 3)})

    names = args.codecs if args.codecs is not None else (
        ["f32"] + [n for n in CODECS.names() if n != "f32"])
    for name in names:
        codec_line: dict[str, Any] = {"codec": name, **({} if name == "f32" else {"info": True})}
        for data_copy in (False, True) if name == "f32" else (False,):
            enc_s = best_of(partial(encode_frames, tensors, name, data_copy=data_copy),
                            args.repeat)
            emit({"stage": "encode_chunk_frame", **codec_line, "data_copy": data_copy,
                  **ratios(enc_s)})
        frames = encode_frames(tensors, name, data_copy=False)
        back = decode_frames(frames)
        exact = all(torch.equal(a, b) for a, b in zip(back, tensors, strict=True))
        dec_s = best_of(partial(decode_frames, frames), args.repeat)
        emit({"stage": "unpack_reassemble_decode", **codec_line, **ratios(dec_s),
              "frames": len(frames), "wire_bytes": sum(len(f) for f in frames),
              "bit_exact": exact})
        del frames, back


if __name__ == "__main__":
    main()
