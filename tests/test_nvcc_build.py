"""What nvcc makes of csrc/cuda, checked without a GPU (issue 6).

The emulator (tests/test_cuda.py in an ALEXNET_C_CUDA=emulate build) proves what the
kernels compute; it cannot see what a real GPU would refuse or slow down for. ptxas
decides that at build time, so these tests compile every csrc/cuda/*.cu with setup.py's
own nvcc command for every default SM version (benchmarks/cuda_resources.py) and hold:
  - the build is warning-free, host and device code;
  - every kernel declares __launch_bounds__, so ptxas caps its registers at what a
    block of that size can have, and a block fits on one multiprocessor of each SM
    version (with the resident blocks it asks for);
  - no kernel spills registers to local memory or keeps a stack frame: on a GPU
    that is slow off-chip traffic the emulator would never show;
  - tensor-core instructions appear only in the TF32 GEMM, whose only TF32 conversion
    is round to nearest, ties away (cvt.rna.tf32), as README says; the float32 path
    is plain FMAs, and below sm_80 the TF32 kernel holds no tensor-core code;
  - float arithmetic is IEEE: no flush-to-zero (but the ex2.approx.ftz inside precise
    expf), no approximate division or square root (what --use_fast_math would bring).

Needs nvcc (not a GPU): skipped with the reason where none is found, and a failure in
CI, whose machines have it, like every non-GPU skip there.
"""
import importlib.util
import os
import re
import sys

import pytest

# setup.py, whose nvcc command these tests compile with, imports setuptools (a build
# requirement, in most environments but not guaranteed in a bare venv).
pytest.importorskip("setuptools", reason="setup.py (read for its nvcc command) imports setuptools")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool():
    spec = importlib.util.spec_from_file_location(
        "cuda_resources", os.path.join(ROOT, "benchmarks", "cuda_resources.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


cuda_resources = _tool()
DEFAULT_ARCHS = cuda_resources.setup_module().DEFAULT_CUDA_ARCHS.split(";")


@pytest.fixture(scope="module")
def report():
    try:
        return cuda_resources.collect(DEFAULT_ARCHS)
    except FileNotFoundError as e:
        pytest.skip(f"needs the CUDA toolkit: {e}")


def _by_arch(report, arch):
    kernels = [k for k in report.kernels if k.arch == arch]
    assert kernels, f"no kernels found for sm_{arch}"
    return kernels


# Every kernel of csrc/cuda, by the stem of its name: a kernel dropped from the build
# (an #if gone wrong) or a new one that nobody looked at fails here.
EXPECTED_KERNELS = {"relu_kernel", "softmax_rows_kernel", "softmax_cols_kernel", "max_pool2d_kernel",
                    "adaptive_avg_pool2d_kernel", "linear_rows_kernel", "gemm_tile_kernel",
                    "gemm_tile_kernel_2blocks", "gemm_tf32_kernel", "arch_probe_kernel"}


def _stem(kernel):
    return kernel.name.split("<")[0]


def test_the_build_is_warning_free(report):
    assert report.warnings == []


@pytest.mark.parametrize("arch", DEFAULT_ARCHS)
def test_every_kernel_is_compiled(report, arch):
    assert {_stem(k) for k in _by_arch(report, arch)} == EXPECTED_KERNELS


@pytest.mark.parametrize("arch", DEFAULT_ARCHS)
def test_every_kernel_declares_a_launch_bound(report, arch):
    unbounded = [k.name for k in _by_arch(report, arch) if not k.max_threads]
    assert unbounded == []


@pytest.mark.parametrize("arch", DEFAULT_ARCHS)
def test_no_kernel_spills_or_keeps_a_stack_frame(report, arch):
    bad = [(k.name, k.source, k.spill_stores, k.spill_loads, k.stack_bytes) for k in _by_arch(report, arch)
           if k.spill_stores or k.spill_loads or k.stack_bytes]
    assert bad == []


@pytest.mark.parametrize("arch", DEFAULT_ARCHS)
def test_a_block_fits_on_a_multiprocessor(report, arch):
    assert arch in cuda_resources.SM_LIMITS, f"sm_{arch} needs its limits in SM_LIMITS"
    for k in _by_arch(report, arch):
        assert k.registers * k.max_threads <= 65536, k
        assert k.shared_bytes <= 48 * 1024, k   # static shared memory, no opt-in needed
        assert k.blocks_per_sm() >= (k.min_blocks or 1), k


def test_occupancy_model_reproduces_known_limits():
    # The calculator's arithmetic on cases worked by hand: 256 threads at 128 registers
    # is 4096 registers per warp, 16 warps of 64K: two blocks; 40 registers round up to
    # 1280 per warp, 51 warps: six blocks of 8; sm_75 has 32 warps: four blocks.
    def k(arch, regs, smem=0, threads=256):
        return cuda_resources.Kernel(mangled="k", name="k", source="k.cu", arch=arch, registers=regs,
                                     shared_bytes=smem, spill_stores=0, spill_loads=0, stack_bytes=0,
                                     max_threads=threads, min_blocks=None)
    assert k("90", 128).blocks_per_sm() == 2
    assert k("90", 40).blocks_per_sm() == 6
    assert k("90", 19).blocks_per_sm() == 8
    assert k("75", 19).blocks_per_sm() == 4
    assert k("90", 32, smem=48 * 1024, threads=128).blocks_per_sm() == 4   # 228K / (48K + 1K)
    assert k("86", 32, smem=48 * 1024, threads=128).blocks_per_sm() == 2   # 100K / 49K
    assert k("90", 32).occupancy() == 1.0
    # registers come per SM sub-partition: warps in fours. One warp at 104 registers
    # (3328 a warp) is 16 warps, not 19; nine warps at 200 registers do not fit on sm_75.
    assert k("80", 104, threads=32).blocks_per_sm() == 16
    assert k("75", 200, threads=288).blocks_per_sm() == 0


# An instruction at the start of a line, after an optional predicate (@%p1 / @!%p1).
_PRED = r"^\s*(?:@!?%\w+\s+)?"
_TENSOR_CORE = re.compile(_PRED + r"(?:wmma\.|mma\.|wgmma\.)", re.M)
_TF32_CONVERT = re.compile(_PRED + r"cvt\.\w+\.tf32\.f32", re.M)


@pytest.mark.parametrize("arch", DEFAULT_ARCHS)
def test_tensor_cores_only_in_the_tf32_gemm(report, arch):
    kernels = _by_arch(report, arch)
    with_mma = {k.name for k in kernels if _TENSOR_CORE.search(k.ptx)}
    with_tf32 = {k.name for k in kernels if _TF32_CONVERT.search(k.ptx)}
    tf32 = {k.name for k in kernels if _stem(k) == "gemm_tf32_kernel"}
    assert len(tf32) == 9   # three tiles, times the three ways of reading B (conv, dilated conv, linear)
    if int(arch) < 80:
        # No TF32 tensor cores: the kernel is a bare trap that the host never launches
        # (check_tf32 refuses a GPU below 8.0, and this code JIT-compiled for a newer one).
        assert with_mma == set() and with_tf32 == set()
        return
    assert with_mma == tf32
    assert with_tf32 == tf32
    for k in kernels:
        if k.name in tf32:
            mma = re.findall(_PRED + r"(wmma\.mma\S*)", k.ptx, re.M)
            assert mma and all(".f32.tf32.tf32.f32" in m for m in mma), (k.name, set(mma))
            # rounding as PyTorch's allow_tf32: to nearest, ties away from zero
            assert set(re.findall(_PRED + r"(cvt\.\w+\.tf32\.f32)", k.ptx, re.M)) == {"cvt.rna.tf32.f32"}


# expf's precise implementation (no fast math) reduces the argument with FMAs and
# takes 2^f of the remainder with ex2.approx.ftz, whose input is never subnormal
# there; that one instruction is allowed (which also means a fast __expf, the same
# instruction without the reduction, would not show here).
_ALLOWED_FTZ = {"ex2.approx.ftz.f32"}
_FLOAT_OP = re.compile(_PRED + r"((?:add|sub|mul|fma|mad|div|rcp|sqrt|rsqrt|min|max|ex2|lg2|sin|cos|tanh|"
                       r"setp|cvt|neg|abs|testp)\.[\w.]*)", re.M)


@pytest.mark.parametrize("arch", DEFAULT_ARCHS)
def test_float_arithmetic_is_ieee(report, arch):
    ops = set()
    texts = [text for (_, a), text in report.ptx.items() if a == arch]   # device functions too
    assert len(texts) >= 4
    for text in texts:
        ops |= set(_FLOAT_OP.findall(text))
    assert any(op.startswith("fma.") for op in ops)   # the parser sees the instructions
    flushed = {op for op in ops if ".ftz" in op} - _ALLOWED_FTZ
    approximate = {op for op in ops if re.match(r"(div|rcp|sqrt|rsqrt)\.(approx|full)", op)}
    assert flushed == set() and approximate == set()


def test_parsers_on_known_text():
    # Text in the shapes nvcc 12 and 13 print, so a change of format shows here rather
    # than as tests that pass on nothing.
    ptxas = ("ptxas info    : Compiling entry function '_Z1kv' for 'sm_90'\n"
             "ptxas info    : Function properties for _Z1kv\n"
             "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
             "ptxas info    : Used 40 registers, used 1 barriers, 9216 bytes smem\n"
             # a called (not inlined) function's properties, after the kernel's own
             "ptxas info    : Function properties for _Z6helperv\n"
             "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n")
    assert cuda_resources.ptxas_report(ptxas) == {("_Z1kv", "90"): {
        "registers": 40, "shared_bytes": 9216, "spill_stores": 4, "spill_loads": 12, "stack_bytes": 8}}
    ptx = (".visible .entry _Z1kv(\n\t.param .u64 p\n)\n.maxntid 128, 2, 1\n.minnctapersm 2\n{\n"
           "\tfma.rn.f32 %f1, %f2, %f3, %f4;\n}\n.entry _Z1jv(\n)\n{\n\tret;\n}\n")
    entries = cuda_resources.ptx_entries(ptx)
    assert set(entries) == {"_Z1kv", "_Z1jv"}
    assert entries["_Z1kv"][:2] == (256, 2) and "fma.rn.f32" in entries["_Z1kv"][2]
    assert entries["_Z1jv"][:2] == (None, None) and "fma" not in entries["_Z1jv"][2]


def test_kernel_names_without_cxxfilt(monkeypatch):
    # c++filt comes with binutils; where it is missing the stems must still come out,
    # and two instantiations of one template must stay two names.
    monkeypatch.setattr(cuda_resources.shutil, "which", lambda name: None)
    mangled = ["_ZN3acn16gemm_tile_kernelILi32ELi32ELi16ELi2ELi2ELNS_5BLoadE0EEEvNS_8GemmArgsE",
               "_ZN3acn16gemm_tile_kernelILi32ELi32ELi16ELi2ELi2ELNS_5BLoadE1EEEvNS_8GemmArgsE",
               "_ZN3acn46_GLOBAL__N__c283e578_13_activation_cu_2e1cd66811relu_kernelEPfPKfmm"]
    names = cuda_resources.short_names(mangled)
    assert [n.split("<")[0] for n in names.values()] == ["gemm_tile_kernel", "gemm_tile_kernel", "relu_kernel"]
    assert len(set(names.values())) == 3
    assert cuda_resources.short_names(["_Z11relu_kernelPfPKfmm"]) == {   # the global namespace
        "_Z11relu_kernelPfPKfmm": "relu_kernel"}
