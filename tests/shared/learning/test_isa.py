"""Tests for shared/learning/isa.py: the bf16 ISA from CPU flags and from oneDNN's verbose log."""

from __future__ import annotations

import pytest

from fedstream.shared.learning.cpu import detect_cpu, parse_cpuinfo
from fedstream.shared.learning.isa import bf16_isa, onednn_isa, parse_onednn_verbose

# Captured on this project's AMD EPYC (avx512_bf16, no AMX), torch 2.13 running
# shared/learning/isa.py's probe, plus an fp32 convolution and its reorders, which must be ignored.
ONEDNN_3_12_ZEN4 = """\
onednn_verbose,v1,info,oneDNN v3.12.0 (commit 80afa71049cd69a3df32adcccb623b12cd7baa22)
onednn_verbose,v1,info,cpu,runtime:OpenMP,nthr:2
onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support
onednn_verbose,v1,info,gpu,runtime:none
onednn_verbose,v1,info,graph,backend,0:dnnl_backend
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,\
memory_descriptors,attributes,auxiliary,problem_desc,exec_time
onednn_verbose,v1,graph,info,template:operation,engine,partition_id,partition_kind,op_names,\
data_formats,logical_tensors,fpmath_mode,implementation,backend,exec_time
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,undef,\
src:bf16::blocked:ab::f0 wei:bf16::blocked:ba::f0 dst:bf16::blocked:ab::f0,\
attr-scratchpad:user attr-post-ops:sum,,32x128:128x64,0.266113
onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx512_core_bf16,undef,\
src:bf16::blocked:ab::f0 wei:bf16::blocked:ab::f0 dst:bf16::blocked:ab::f0,\
attr-scratchpad:user,,32x64:64x128,0.00683594
onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:abcd::f0 \
dst:f32:p:blocked:Acdb16a::f0,attr-scratchpad:user,,4x3x3x3,0.0100098
onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,forward_training,\
src:f32:a:blocked:abcd::f0 wei:f32:ap:blocked:Acdb16a::f0 bia:f32:a:blocked:a::f0 \
dst:f32:ap:blocked:aBcd16b::f0,attr-scratchpad:user,alg:convolution_direct,\
mb8_ic3oc4_ih16oh14kh3sh1dh0ph0_iw16ow14kw3sw1dw0pw0,0.189941
"""

# Hand-written in the oneDNN 2.x layout (no "v1" mark, "src_bf16" descriptors) for an AMX
# machine; its ISA text holds a comma, which must not cut it short.
ONEDNN_2_AMX = """\
onednn_verbose,info,oneDNN v2.7.3 (commit 6dbeffbae1f23cbbeae17adb7b5b13f1f37c080e)
onednn_verbose,info,cpu,runtime:OpenMP
onednn_verbose,info,cpu,isa:Intel AVX-512 with float16, Intel DL Boost and bfloat16 support \
and Intel AMX with bfloat16 and 8-bit integer support
onednn_verbose,info,gpu,runtime:none
onednn_verbose,exec,cpu,inner_product,brgemm:avx512_core_amx,forward_training,\
src_bf16::blocked:ab:f0 wei_bf16:p:blocked:AB16b64a2b:f0 bia_f32::blocked:a:f0 \
dst_bf16::blocked:ab:f0,,,mb32ic128oc64,0.0969
onednn_verbose,exec,cpu,matmul,brg:avx512_core_amx,undef,src_bf16::blocked:ab:f0 \
wei_bf16::blocked:ab:f0 dst_bf16::blocked:ab:f0,,,32x128:128x64:32x64,0.05
"""

# Hand-written in the DNNL 1.x layout: fp32 only, so no bf16 kernel ran through the library.
DNNL_1_FP32 = """\
dnnl_verbose,info,DNNL v1.6.4 (commit 34e0da6a7b2e4b5eb8d8e8ed1ab3d3e0bbd7f9c1)
dnnl_verbose,info,cpu,runtime:OpenMP
dnnl_verbose,info,cpu,isa:Intel AVX-512 with Intel DL Boost
dnnl_verbose,exec,cpu,inner_product,gemm:jit,forward_training,src_f32::blocked:ab:f0 \
wei_f32::blocked:ab:f0 bia_f32::blocked:a:f0 dst_f32::blocked:ab:f0,,,mb32ic128oc64,0.12
"""


def _cpu(flags: str) -> str:
    return bf16_isa(parse_cpuinfo(f"model name\t: Test\nflags\t\t: {flags}\n"))


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "amx_bf16"),
        ("avx2 avx512f avx512_vnni avx512_bf16", "avx512_bf16"),
        ("avx2 avx512f avx512_vnni", "none"),
        ("", "none"),
    ],
)
def test_bf16_isa_from_flags(flags: str, expected: str) -> None:
    """AMX wins over AVX-512 bf16, and a CPU with neither reports none."""
    # Execute
    result = _cpu(flags)

    # Assert
    assert result == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ONEDNN_3_12_ZEN4, {
            "isa": "Intel AVX-512 with Intel DL Boost and bfloat16 support",
            "version": "oneDNN v3.12.0", "bf16_impl": "brg_matmul:avx512_core_bf16"}),
        (ONEDNN_2_AMX, {
            "isa": "Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and "
                   "Intel AMX with bfloat16 and 8-bit integer support",
            "version": "oneDNN v2.7.3", "bf16_impl": "brgemm:avx512_core_amx,brg:avx512_core_amx"}),
        (DNNL_1_FP32, {
            "isa": "Intel AVX-512 with Intel DL Boost", "version": "DNNL v1.6.4",
            "bf16_impl": "none"}),
    ],
    ids=["onednn3-captured", "onednn2-amx", "dnnl1-fp32"],
)
def test_parse_onednn_verbose(text: str, expected: dict[str, str]) -> None:
    """The ISA line, version and distinct bf16 matmul kernels are read; other lines are not."""
    # Prepare
    noisy = f"some program output\n{text}more output, isa:not-this\n"

    # Execute
    result = parse_onednn_verbose(noisy)

    # Assert
    assert result == expected


def test_parse_without_isa_line_is_unknown() -> None:
    """Output with no oneDNN info line (oneDNN absent or silent) says unknown and why."""
    # Execute
    result = parse_onednn_verbose("hello\nonednn_verbose\n")

    # Assert
    assert result["isa"] == "unknown"
    assert "no oneDNN isa line" in result["detail"]


def test_real_probe_reports_the_kernel_the_cpu_flags_promise() -> None:
    """The child-process probe names oneDNN's ISA, and its bf16 kernel matches the CPU flags."""
    # Execute
    result = onednn_isa()

    # Assert
    if result["isa"] == "unknown" and result["detail"].startswith("probe could not start"):
        pytest.skip(result["detail"])
    assert result["isa"] != "unknown", result
    assert result["cpu_capability"]
    assert onednn_isa() is result  # cached: the second call starts no process
    cpu = detect_cpu()
    if cpu.amx_bf16:
        assert "amx" in result["bf16_impl"]
    elif cpu.avx512_bf16:
        assert "avx512_core_bf16" in result["bf16_impl"]


def test_probe_past_its_timeout_is_unknown_not_fatal() -> None:
    """A probe that cannot finish in time reports unknown with the reason instead of raising."""
    # Execute
    result = onednn_isa(timeout=0.001)

    # Assert
    assert result["isa"] == "unknown"
    assert result["detail"] == "probe timed out after 0.001 s"
