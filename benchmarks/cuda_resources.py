#!/usr/bin/env python3
"""Registers, shared memory, spills and occupancy of every CUDA kernel, from the compiler.

The CPU emulator (csrc/cuda_emu) runs the kernels' logic, but it cannot see what
limits them on a real GPU: registers per thread, spills to local memory, shared memory
per block, how many blocks fit on a multiprocessor. ptxas decides all of that at build
time. This compiles each csrc/cuda/*.cu with setup.py's own nvcc command (nvcc_command)
plus `--resource-usage --keep`, and reads for every kernel and SM version:
  - ptxas's report: registers, shared memory, spill stores and loads, stack frame;
  - the PTX: the launch bound (.maxntid, .minnctapersm) and the instructions;
and works out the resident blocks per multiprocessor those allow (the occupancy
calculator's rules, for a block of the launch bound's size). Needs nvcc, no GPU.
tests/test_nvcc_build.py asserts on what it finds.

usage: python benchmarks/cuda_resources.py [--archs "75;90"] [--json out.json]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_module():
    """setup.py as a module (its setup() call runs only as __main__)."""
    spec = importlib.util.spec_from_file_location("alexnet_c_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class SmLimits:
    """Per-multiprocessor limits of one SM version (CUDA C Programming Guide, table of
    technical specifications per compute capability)."""
    max_warps: int
    max_blocks: int
    shared_bytes: int           # shared memory per SM at the largest carve-out
    reserved_per_block: int     # shared memory the system takes per resident block
    shared_unit: int = 128      # allocation granularity of shared memory
    registers: int = 65536
    register_unit: int = 256    # registers are allocated per warp in units of this


SM_LIMITS = {
    "75": SmLimits(max_warps=32, max_blocks=16, shared_bytes=64 * 1024, reserved_per_block=0, shared_unit=256),
    "80": SmLimits(max_warps=64, max_blocks=32, shared_bytes=164 * 1024, reserved_per_block=1024),
    "86": SmLimits(max_warps=48, max_blocks=16, shared_bytes=100 * 1024, reserved_per_block=1024),
    "89": SmLimits(max_warps=48, max_blocks=24, shared_bytes=100 * 1024, reserved_per_block=1024),
    "90": SmLimits(max_warps=64, max_blocks=32, shared_bytes=228 * 1024, reserved_per_block=1024),
}


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


@dataclasses.dataclass
class Kernel:
    mangled: str
    name: str                 # demangled where c++filt is found, without the namespaces
    source: str               # the .cu file it was compiled from
    arch: str                 # SM version, "90"
    registers: int
    shared_bytes: int         # static __shared__ per block
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    max_threads: int | None   # __launch_bounds__'s first argument; None without one
    min_blocks: int | None    # its second (minimum resident blocks per SM)
    ptx: str = dataclasses.field(repr=False, default="")   # the entry's PTX body

    def blocks_per_sm(self) -> int | None:
        """Resident blocks of max_threads threads per multiprocessor, or None (no launch
        bound, or an SM version without a table entry)."""
        limits = SM_LIMITS.get(self.arch)
        if limits is None or not self.max_threads:
            return None
        warps = -(-self.max_threads // 32)
        by_warps = limits.max_warps // warps
        per_warp = _round_up(max(self.registers, 1) * 32, limits.register_unit)
        # The register file is split over the SM's 4 sub-partitions: the warps that fit
        # come in multiples of 4 (a block's warps are spread over the four).
        warps_by_registers = (limits.registers // 4 // per_warp) * 4
        by_registers = warps_by_registers // warps
        per_block = _round_up(self.shared_bytes, limits.shared_unit) + limits.reserved_per_block
        by_shared = limits.shared_bytes // per_block if self.shared_bytes else limits.max_blocks
        return min(limits.max_blocks, by_warps, by_registers, by_shared)

    def occupancy(self) -> float | None:
        """Resident warps over the SM's maximum."""
        blocks = self.blocks_per_sm()
        if blocks is None:
            return None
        return blocks * -(-self.max_threads // 32) / SM_LIMITS[self.arch].max_warps


@dataclasses.dataclass
class Report:
    kernels: list[Kernel]
    warnings: list[str]       # every line of nvcc's output that says "warning"
    nvcc_version: str
    ptx: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)   # (source, SM) -> PTX


_ENTRY = re.compile(r"^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+([\w$]+)\s*\(", re.M)
_COMPILING = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\w+)'")
_PROPERTIES = re.compile(r"Function properties for ([\w$.]+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(.*)")


def ptx_entries(ptx: str) -> dict[str, tuple[int | None, int | None, str]]:
    """entry name -> (maxntid product, minnctapersm, PTX text up to the next entry)."""
    out = {}
    matches = list(_ENTRY.finditer(ptx))
    for i, m in enumerate(matches):
        body = ptx[m.start():matches[i + 1].start() if i + 1 < len(matches) else len(ptx)]
        head = body.split("{", 1)[0]
        ntid = re.search(r"\.maxntid\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?", head)
        max_threads = None
        if ntid:
            max_threads = 1
            for g in ntid.groups():
                max_threads *= int(g or 1)
        ncta = re.search(r"\.minnctapersm\s+(\d+)", head)
        out[m.group(1)] = (max_threads, int(ncta.group(1)) if ncta else None, body)
    return out


def ptxas_report(text: str) -> dict[tuple[str, str], dict[str, int]]:
    """(mangled name, SM version) -> registers, shared_bytes, spills, stack, from
    nvcc --resource-usage's output."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    current = None
    properties_of = None   # the function whose "Function properties" lines follow
    for line in text.splitlines():
        m = _COMPILING.search(line)
        if m:
            current = (m.group(1), m.group(2))
            out[current] = {"registers": 0, "shared_bytes": 0, "spill_stores": 0, "spill_loads": 0,
                            "stack_bytes": 0}
            properties_of = None
            continue
        m = _PROPERTIES.search(line)
        if m:
            properties_of = m.group(1)
            continue
        if current is None:
            continue
        m = _FRAME.search(line)
        if m:
            # A called (not inlined) function's frame is reported under its own name,
            # after the kernel's: only the kernel's own lines count for the kernel.
            if properties_of != current[0]:
                continue
            out[current].update(stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)),
                                spill_loads=int(m.group(3)))
            continue
        m = _USED.search(line)
        if m:
            out[current]["registers"] = int(m.group(1))
            smem = re.search(r"(\d+) bytes smem", m.group(2))
            out[current]["shared_bytes"] = int(smem.group(1)) if smem else 0
    return out


def _unqualified(mangled: str) -> str:
    """The kernel's own name out of an Itanium-mangled one (`_ZN3acn16gemm_tile_kernelI...`
    -> `gemm_tile_kernel<I...>`): the last of the nested source names, with what follows
    it (the template arguments, still mangled) kept so that instantiations stay apart."""
    m = re.match(r"_Z(\d+)", mangled)
    if m:   # a name in the global namespace: _Z<length><name><parameters>
        return mangled[m.end():m.end() + int(m.group(1))]
    if not re.match(r"_ZN\d", mangled):
        return mangled
    pos, name = 3, mangled
    while pos < len(mangled) and mangled[pos].isdigit():
        digits = re.match(r"\d+", mangled[pos:]).group(0)
        start = pos + len(digits)
        name, pos = mangled[start:start + int(digits)], start + int(digits)
    return f"{name}<{mangled[pos:]}>" if mangled[pos:pos + 1] == "I" else name


def short_names(mangled: list[str]) -> dict[str, str]:
    """Demangled names without namespaces and parameter lists (where c++filt is missing:
    the unqualified name, template arguments left mangled)."""
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not mangled:
        return {m: _unqualified(m) for m in mangled}
    lines = subprocess.run([cxxfilt], input="\n".join(mangled), capture_output=True, text=True,
                           check=True).stdout.splitlines()
    out = {}
    for m, d in zip(mangled, lines):
        d = re.sub(r"^void\s+", "", d)
        d = d.replace("(anonymous namespace)::", "").replace("acn::", "")
        depth, cut = 0, len(d)
        for i, c in enumerate(d):   # drop the parameter list: the last top-level "(...)"
            if c == "<":
                depth += 1
            elif c == ">":
                depth -= 1
            elif c == "(" and depth == 0:
                cut = i
        out[m] = d[:cut]
    return out


def compile_source(nvcc: str, command, src: str, archs: list[str], workdir: str) -> tuple[str, dict[str, str]]:
    """Compiles one source with the build's command; returns (nvcc's output, {SM
    version: PTX text})."""
    stem = os.path.splitext(os.path.basename(src))[0]
    keep = os.path.join(workdir, stem)
    os.makedirs(keep, exist_ok=True)
    cmd = command(nvcc, src, os.path.join(keep, stem + ".o"), archs) + \
        ["--resource-usage", "--keep", "--keep-dir", keep]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed on {src} (status {proc.returncode}):\n{output}")
    ptx = {}
    for a in archs:
        path = os.path.join(keep, f"{stem}.compute_{a}.ptx")
        if len(set(archs)) == 1:   # one virtual architecture: nvcc leaves the PTX unsuffixed
            path = os.path.join(keep, f"{stem}.ptx")
        with open(path) as f:
            ptx[a] = f.read()
    return output, ptx


def collect(archs: list[str] | None = None, nvcc: str | None = None) -> Report:
    """Compiles every csrc/cuda/*.cu for archs (default: the build's) and returns the
    kernels of each SM version. Raises FileNotFoundError without nvcc."""
    setup = setup_module()
    if nvcc is None:
        nvcc, _ = setup.find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (looked in $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, PATH)")
    archs = archs or setup.cuda_archs()
    sources = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    version = re.search(r"release [\d.]+, V[\d.]+",
                        subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout)
    with tempfile.TemporaryDirectory(prefix="alexnet_c-ptxas-") as workdir:
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = list(pool.map(lambda s: compile_source(nvcc, setup.nvcc_command, s, archs, workdir),
                                    sources))
    kernels, warnings, pending, whole_ptx = [], [], [], {}
    for src, (output, ptx) in zip(sources, results):
        warnings += [f"{src}: {line}" for line in output.splitlines() if "warning" in line.lower()]
        usage = ptxas_report(output)
        for arch in archs:
            whole_ptx[(os.path.basename(src), arch)] = ptx[arch]
            for mangled, (max_threads, min_blocks, body) in ptx_entries(ptx[arch]).items():
                if (mangled, arch) not in usage:
                    raise RuntimeError(f"{src}: ptxas reported nothing for {mangled} on sm_{arch}")
                pending.append(Kernel(mangled=mangled, name=mangled, source=os.path.basename(src), arch=arch,
                                      max_threads=max_threads, min_blocks=min_blocks, ptx=body,
                                      **usage[(mangled, arch)]))
    names = short_names(sorted({k.mangled for k in pending}))
    for k in pending:
        k.name = names[k.mangled]
        kernels.append(k)
    return Report(kernels=kernels, warnings=warnings, nvcc_version=f"nvcc {version.group(0)}" if version else "nvcc ?",
                  ptx=whole_ptx)


def table(report: Report) -> str:
    lines = [f"ptxas resource usage, {report.nvcc_version}; blocks/SM and occupancy for a block of the "
             "launch bound's size (theoretical: the occupancy calculator's rules)"]
    for arch in sorted({k.arch for k in report.kernels}, key=lambda a: (int(re.match(r"\d*", a).group() or 0), a)):
        lines.append(f"\nsm_{arch}")
        lines.append(f"  {'kernel':58} {'file':14} {'threads':>7} {'regs':>4} {'smem B':>7} "
                     f"{'spill st/ld':>11} {'stack':>5} {'blocks/SM':>9} {'occ':>5}")
        for k in sorted((k for k in report.kernels if k.arch == arch), key=lambda k: (k.source, k.name)):
            blocks, occ = k.blocks_per_sm(), k.occupancy()
            lines.append(f"  {k.name[:58]:58} {k.source:14} {k.max_threads or '-':>7} {k.registers:>4} "
                         f"{k.shared_bytes:>7} {f'{k.spill_stores}/{k.spill_loads}':>11} {k.stack_bytes:>5} "
                         f"{blocks if blocks is not None else '-':>9} "
                         f"{f'{occ:.0%}' if occ is not None else '-':>5}")
    if report.warnings:
        lines.append("\nwarnings:")
        lines += ["  " + w for w in report.warnings]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", help='SM versions, e.g. "75;90" (default: the build\'s, ALEXNET_C_CUDA_ARCHS)')
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    archs = [a.strip() for a in args.archs.replace(",", ";").split(";") if a.strip()] if args.archs else None
    try:
        report = collect(archs)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(report))
    if args.json:
        rows = [{**dataclasses.asdict(k), "ptx": None, "blocks_per_sm": k.blocks_per_sm(),
                 "occupancy": k.occupancy()} for k in report.kernels]
        with open(args.json, "w") as f:
            json.dump({"nvcc": report.nvcc_version, "warnings": report.warnings, "kernels": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
