"""Build of alexnet_c._C: the C kernels (OpenMP) and, when nvcc is found, the CUDA ones.

ALEXNET_C_CUDA=0 builds CPU-only, =1 makes a missing CUDA toolkit an error, unset or
"auto" builds CUDA when nvcc is found. ALEXNET_C_CUDA_ARCHS (default "75;80;86;89;90")
lists the SM versions; PTX for the last one is embedded too so newer GPUs JIT it.
ALEXNET_C_CUDA=emulate compiles the same csrc/cuda sources with the host C++ compiler
against csrc/cuda_emu (a CPU emulator of the CUDA runtime and thread model), so that
device="cuda" runs every CUDA kernel on the CPU: for testing the kernels where there
is no GPU, never for speed.
ALEXNET_C_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer.
"""
import glob
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "75;80;86;89;90"


def find_nvcc():
    """(nvcc, toolkit root). The root is where lib64/libcudart_static.a lives: found
    from CUDA_HOME / CUDA_PATH, else /usr/local/cuda, else next to an nvcc on PATH
    (which may be a wrapper script, hence the toolkit folders are preferred)."""
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for root in filter(None, roots):
        nvcc = os.path.join(root, "bin", "nvcc")
        if os.path.isfile(nvcc):
            return nvcc, root
    found = shutil.which("nvcc")
    if found:
        return found, os.path.dirname(os.path.dirname(os.path.realpath(found)))
    return None, None


def cuda_mode():
    mode = os.environ.get("ALEXNET_C_CUDA", "auto").strip().lower()
    if mode not in ("0", "1", "auto", "", "emulate"):
        raise RuntimeError(f"ALEXNET_C_CUDA must be 0, 1, auto or emulate, got {mode!r}")
    return mode


# kernel<<<grid, block, smem, stream>>>( -> what the emulator's Launch takes (one level
# of template arguments, which is all the kernels use).
_LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^<>;(){}]*>)?)\s*<<<(.*?)>>>\s*\(", re.S)


# A __shared__ array declaration: `__shared__ [__align__(n)] T name[a][b]...;`
_SHARED = re.compile(r"__shared__\s+(?:__align__\(\s*(\d+)\s*\)\s+)?([^;\[]*?)\s*\b([A-Za-z_]\w*)\s*((?:\[[^\]]*\])+)\s*;")


# `__launch_bounds__(args) name(params) {` (args with one level of parentheses): the
# emulator's form checks the block size on entry (check_launch_bound in cuda_runtime.h).
_LAUNCH_BOUNDS = re.compile(r"__launch_bounds__\(((?:[^()]|\([^()]*\))*)\)(\s*[A-Za-z_]\w*\s*\([^(){};]*\)\s*\{)")


def _emulated_shared(m):
    """The emulator's form of a __shared__ array (see block_shared in
    csrc/cuda_emu/cuda_runtime.h): storage from the block's runner, no TLS."""
    align, type_, name, dims = m.groups()
    if align and int(align) > 64:
        raise RuntimeError(f"__shared__ {name}: the emulator aligns shared arrays to 64 bytes, not {align}")
    return (f"static char acn_emu_site_{name}; "
            f"auto &{name} = ::acn_emu::block_shared<{type_}{dims}>(&acn_emu_site_{name});")


# A string or character literal (group 1, kept as it is) or a comment.
_COMMENT = re.compile(r'("(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\')|/\*.*?\*/|//[^\n]*', re.S)


def _without_comments(text):
    """text with its comments blanked, newlines kept (so every line stays where it
    was): a comment that names __shared__, __launch_bounds__ or <<< is no code to
    rewrite, and no reason for emulator_source to refuse the file."""
    return _COMMENT.sub(lambda m: m.group(1) or re.sub(r"[^\n]", " ", m.group(0)), text)


def emulator_source(path):
    """The text of a .cu / .cuh file in plain C++ for csrc/cuda_emu, lines unchanged:
    launches become calls of the emulator, each __launch_bounds__ a check of the block
    size on the kernel's entry, and each __shared__ array storage that the emulator
    hands out per block (_emulated_shared)."""
    with open(path) as f:
        text = _without_comments(f.read())

    def launch(m):
        name = m.group(1).split("<")[0]
        return f'::acn_emu::Launch({m.group(2)}).of({m.group(1)}, "{name}")('

    out = _LAUNCH.sub(launch, text)
    if "<<<" in out:
        raise RuntimeError(f"{path}: a kernel launch the emulator build cannot rewrite")
    # nvcc's unroll request in GCC's spelling: fully unrolled, the kernels' small
    # register arrays (the GEMM's accumulators) stay in registers here too.
    out = re.sub(r"^(\s*)#pragma\s+unroll\s*$", r"\1#pragma GCC unroll 64", out, flags=re.M)
    out = re.sub(r"^(\s*)#pragma\s+unroll\s+(\d+)\s*$", r"\1#pragma GCC unroll \2", out, flags=re.M)
    out, n_bounds = _LAUNCH_BOUNDS.subn(r"\2 ::acn_emu::check_launch_bound(\1);", out)
    if n_bounds != len(re.findall(r"\b__launch_bounds__\b", text)):
        raise RuntimeError(f"{path}: a __launch_bounds__ the emulator build cannot rewrite "
                           "(it handles `__launch_bounds__(args) name(params) {`)")
    out, n_shared = _SHARED.subn(_emulated_shared, out)
    if n_shared != len(re.findall(r"\b__shared__\b", text)):
        raise RuntimeError(f"{path}: a __shared__ declaration the emulator build cannot rewrite "
                           "(it handles arrays: __shared__ [__align__(n)] type name[size]...;)")
    return f'#line 1 "{path}"\n' + out


def host_has_fma():
    """x86-64 with FMA3, as /proc/cpuinfo reports it (False where it cannot tell)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " fma " in f" {line.split(':', 1)[-1].strip()} "
                       for line in f)
    except OSError:
        return False


def build_cuda_emulator(build_temp, force):
    """Compiles csrc/cuda (launches rewritten) and csrc/cuda_emu with the host C++
    compiler; returns the object files."""
    src_dir = os.path.join(build_temp, "cuda-emu", "src")
    os.makedirs(src_dir, exist_ok=True)
    # csrc/cuda_emu/*.cu: the emulator's self-test kernels, in emulator builds only
    for path in sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu*")) +
                       glob.glob(os.path.join("csrc", "cuda_emu", "*.cu"))):
        text = emulator_source(path)
        dest = os.path.join(src_dir, os.path.basename(path))
        if not os.path.exists(dest) or open(dest).read() != text:
            with open(dest, "w") as f:
                f.write(text)
    sources = sorted(glob.glob(os.path.join(src_dir, "*.cu"))) + \
        sorted(glob.glob(os.path.join("csrc", "cuda_emu", "*.cpp")))
    headers = glob.glob(os.path.join(src_dir, "*.cuh")) + glob.glob(os.path.join("csrc", "cuda_emu", "*.h")) + \
        ["csrc/alexnet_c.h", __file__]
    flags = ["-std=c++17", "-O2", "-fPIC", "-fopenmp", "-Wall", "-Wextra",
             "-fvisibility=hidden", "-I" + src_dir, "-Icsrc/cuda_emu", "-Icsrc",
             "-DALEXNET_C_WITH_CUDA", "-DALEXNET_C_CUDA_EMULATED"]
    if host_has_fma():
        # fmaf() is the kernels' every multiply-add; without FMA code generation each
        # one is a call into libm (a fifth of the emulator's time). This build runs
        # where it is built, so the build machine's CPU is the one that counts.
        flags.append("-mfma")
    if os.environ.get("ALEXNET_C_SANITIZE") == "1":
        # -O2 kept (not the C build's -O1): the emulated kernels under ASan run a
        # batch-1 forward in 8 s at -O2 and 19 s at -O1.
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
    cxx = shlex.split(os.environ.get("CXX", "g++"))
    # One object folder per compiler and flags, as the nvcc build keys its folder by the
    # architectures: up-to-date checks go by mtime, and an object built with other flags
    # (say, without -fsanitize) must never be taken for a current one.
    key = hashlib.sha1(" ".join(cxx + flags).encode()).hexdigest()[:12]
    obj_dir = os.path.join(build_temp, "cuda-emu", "obj-" + key)
    os.makedirs(obj_dir, exist_ok=True)
    objects = []
    for src in sources:
        obj = os.path.join(obj_dir, os.path.basename(src) + ".o")
        objects.append(obj)
        newest = max(os.path.getmtime(f) for f in [src] + headers)
        if os.path.exists(obj) and os.path.getmtime(obj) >= newest and not force:
            continue
        cmd = cxx + ["-x", "c++", "-c", src, "-o", obj] + flags
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return objects


def cuda_wanted():
    mode = cuda_mode()
    cu_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    if mode in ("0", "emulate"):
        return None, None, []
    nvcc, root = find_nvcc()
    if nvcc is None:
        if mode == "1":
            raise RuntimeError("ALEXNET_C_CUDA=1 but nvcc was not found "
                               "(looked in $CUDA_HOME, $CUDA_PATH, PATH, /usr/local/cuda)")
        return None, None, []
    if not cu_sources:
        if mode == "1":
            raise RuntimeError("ALEXNET_C_CUDA=1 but csrc/cuda has no .cu sources")
        return None, None, []
    return nvcc, root, cu_sources


def cuda_archs():
    """ALEXNET_C_CUDA_ARCHS as a list of SM versions, e.g. ["75", "80", "86", "89", "90"]."""
    value = os.environ.get("ALEXNET_C_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
    return [a.strip() for a in value.replace(",", ";").split(";") if a.strip()]


def nvcc_command(nvcc, src, obj, archs):
    """The nvcc command of one csrc/cuda object: SASS for each SM version in archs, and PTX
    for the last (newer GPUs JIT it). benchmarks/cuda_resources.py runs this very command
    with --resource-usage --keep (tests/test_nvcc_build.py through it), so the registers,
    spills and instructions it checks are those of the build."""
    gencode = []
    for a in archs:
        gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    return [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "-Icsrc",
            "-Xcompiler", "-fPIC", "-Xcompiler", "-Wall", "-Xcompiler", "-fvisibility=hidden",
            "--expt-relaxed-constexpr", "-DALEXNET_C_WITH_CUDA"] + gencode


class BuildExtWithCuda(build_ext):
    """Compiles csrc/cuda/*.cu with nvcc and links the objects into _C.

    A compile error stops the build: CUDA is never dropped silently."""

    def build_extensions(self):
        if cuda_mode() == "emulate":
            objects = build_cuda_emulator(self.build_temp, self.force)
            for ext in self.extensions:
                ext.extra_objects += objects
                ext.depends += objects   # a rebuilt object relinks _C
                ext.define_macros += [("ALEXNET_C_WITH_CUDA", "1"), ("ALEXNET_C_CUDA_EMULATED", "1")]
                ext.libraries += ["stdc++"]
        nvcc, cuda_root, cu_sources = cuda_wanted()
        if nvcc:
            archs = cuda_archs()
            out_dir = os.path.join(self.build_temp, "cuda-sm" + "-".join(archs))
            os.makedirs(out_dir, exist_ok=True)
            objects = []
            headers = glob.glob(os.path.join("csrc", "cuda", "*.cuh")) + ["csrc/alexnet_c.h"]
            for src in cu_sources:
                obj = os.path.join(out_dir, os.path.basename(src) + ".o")
                objects.append(obj)
                newest_input = max(os.path.getmtime(f) for f in [src, __file__] + headers)
                if os.path.exists(obj) and os.path.getmtime(obj) >= newest_input and not self.force:
                    continue   # up to date: nvcc is slow, skip it on rebuilds
                cmd = nvcc_command(nvcc, src, obj, archs)
                print(" ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
            lib_dirs = [d for d in (os.path.join(cuda_root, "lib64"),
                                    os.path.join(cuda_root, "lib"),
                                    os.path.join(cuda_root, "targets", "x86_64-linux", "lib"))
                        if os.path.isfile(os.path.join(d, "libcudart_static.a"))]
            if not lib_dirs:
                raise RuntimeError(f"libcudart_static.a not found under the CUDA toolkit at {cuda_root}; "
                                   "set CUDA_HOME, or ALEXNET_C_CUDA=0 for a CPU-only build")
            for ext in self.extensions:
                ext.extra_objects += objects
                ext.depends += objects   # a rebuilt object relinks _C
                ext.define_macros.append(("ALEXNET_C_WITH_CUDA", "1"))
                ext.library_dirs += lib_dirs
                # cudart_static: import works with no GPU and no driver installed.
                ext.libraries += ["cudart_static", "rt", "pthread", "dl", "stdc++"]
        super().build_extensions()


def extension():
    sources = ["csrc/module.c"] + sorted(glob.glob(os.path.join("csrc", "cpu", "*.c")))
    cflags = ["-std=c11", "-O3", "-fopenmp", "-Wall", "-Wextra", "-fno-strict-aliasing",
              "-fvisibility=hidden"]
    ldflags = ["-fopenmp"]
    if os.environ.get("ALEXNET_C_SANITIZE") == "1":
        cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
        ldflags += ["-fsanitize=address,undefined"]
    return Extension(
        "alexnet_c._C",
        sources=sources,
        include_dirs=["csrc", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        depends=["csrc/alexnet_c.h"] + glob.glob("csrc/cpu/*.h"),
    )


if __name__ == "__main__":   # as pip and `python setup.py` run it; imported, it only defines
    setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtWithCuda})
