"""Which bf16 instruction set training runs on: the CPU's flags, and what oneDNN itself reports.

The flags say what the CPU offers; oneDNN's verbose log says which kernel a bf16 matmul really
dispatched to (AMX tiles, AVX-512 bf16 dot products, or a generic fallback), which is what
decides whether bf16 pays off.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys

import torch

from fedstream.shared.learning.cpu import CpuCaps

# One bf16 Linear forward + backward under autocast, the op mix training runs. Stock torch
# only: IPEX ships its own oneDNN and must never be imported before its version check.
_CHILD = """
import torch
torch.manual_seed(0)
layer = torch.nn.Linear(128, 64)
x = torch.randn(32, 128, requires_grad=True)
with torch.autocast("cpu", dtype=torch.bfloat16):
    out = layer(x)
out.float().sum().backward()
"""

_ENV = {
    "ONEDNN_VERBOSE": "1",
    "DNNL_VERBOSE": "1",  # the name builds before oneDNN 2.x read
    # torch >= 2.5 can import out-of-tree backends on `import torch`; keep the child stock.
    "TORCH_DEVICE_BACKEND_AUTOLOAD": "0",
}
_PREFIX = re.compile(r"^(onednn|dnnl|mkldnn)_verbose$")
_FORMAT_MARK = re.compile(r"^v\d+$")  # "v1" in oneDNN >= 3.5 lines
_VERSION = re.compile(r"\b(?:oneDNN|DNNL) v[\d.]+")
_BF16_PRIMITIVES = ("matmul", "inner_product")


def bf16_isa(cpu: CpuCaps) -> str:
    """The best bf16 instruction set the CPU flags advertise.

    Returns:
        "amx_bf16" (tile matrix multiply), "avx512_bf16" (vector dot products) or "none"
        (torch emulates bf16 in fp32).
    """
    if cpu.amx_bf16:
        return "amx_bf16"
    if cpu.avx512_bf16:
        return "avx512_bf16"
    return "none"


def parse_onednn_verbose(text: str) -> dict[str, str]:
    """Read the ISA and the bf16 matmul kernels from oneDNN verbose output.

    Understands oneDNN 3.x lines (`onednn_verbose,v1,primitive,exec,cpu,matmul,impl,...`),
    older 2.x/3.x ones without the format mark, and DNNL 1.x (`dnnl_verbose,exec,...`).

    Args:
        text: The stdout of a process run with ONEDNN_VERBOSE=1 (other lines are ignored).

    Returns:
        {"isa", "version", "bf16_impl"}: the `info,cpu,isa:` text, the library version, and
        the distinct implementations of bf16 matmul / inner-product primitives joined by ","
        ("none" when no bf16 primitive went through oneDNN). Without an ISA line:
        {"isa": "unknown", "detail": why}.
    """
    isa = version = ""
    impls: dict[str, None] = {}  # insertion-ordered set
    for line in text.splitlines():
        head, *fields = line.strip().split(",")
        if not _PREFIX.match(head):
            continue
        fields = [f for f in fields if not _FORMAT_MARK.match(f)]
        if fields[:1] == ["info"]:
            # The ISA text runs to the end of the line and may hold commas ("with float16, ...").
            isa = isa or line.strip().partition(",isa:")[2]
            found = _VERSION.search(line)
            version = version or (found.group(0) if found else "")
        elif "exec" in fields:
            # exec, engine, primitive, implementation, prop_kind, memory descriptors, ...
            rest = fields[fields.index("exec") + 1:]
            if len(rest) > 4 and rest[0] == "cpu" and rest[1] in _BF16_PRIMITIVES \
                    and "bf16" in rest[4]:
                impls[rest[2]] = None
    if not isa:
        return {"isa": "unknown", "detail": "no oneDNN isa line in the verbose output"}
    return {"isa": isa, "version": version or "unknown", "bf16_impl": ",".join(impls) or "none"}


@functools.cache
def onednn_isa(timeout: float = 30.0) -> dict[str, str]:
    """What oneDNN reports for a bf16 Linear on this machine, probed once per process.

    Runs a child Python (this interpreter, stock torch) with ONEDNN_VERBOSE=1, because oneDNN
    reads that variable once at load time and would flood this process's own stdout. It costs
    one torch import, about 2-3 s.

    Args:
        timeout: Seconds the child may take.

    Returns:
        `parse_onednn_verbose`'s fields plus "cpu_capability" (torch's own dispatch level, e.g.
        "AVX512"). Never raises: on any failure "isa" is "unknown" and "detail" says why.
    """
    capability = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                              env={**os.environ, **_ENV}, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"isa": "unknown", "detail": f"probe timed out after {timeout:g} s", **capability}
    except OSError as err:
        return {"isa": "unknown", "detail": f"probe could not start: {err}", **capability}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no stderr"])[-1]
        return {"isa": "unknown", "detail": f"probe exited {done.returncode}: {last}",
                **capability}
    return {**parse_onednn_verbose(done.stdout), **capability}
