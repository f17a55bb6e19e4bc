"""Build of alexnet_c._C: the C kernels (OpenMP) and, when nvcc is found, the CUDA ones.

ALEXNET_C_CUDA=0 builds CPU-only, =1 makes a missing CUDA toolkit an error, unset or
"auto" builds CUDA when nvcc is found. ALEXNET_C_CUDA_ARCHS (default "75;80;86;89;90")
lists the SM versions; PTX for the last one is embedded too so newer GPUs JIT it.
ALEXNET_C_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer.
"""
import glob
import os
import shutil
import subprocess

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


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


def cuda_wanted():
    mode = os.environ.get("ALEXNET_C_CUDA", "auto").strip().lower()
    if mode not in ("0", "1", "auto", ""):
        raise RuntimeError(f"ALEXNET_C_CUDA must be 0, 1 or auto, got {mode!r}")
    cu_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    if mode == "0":
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


class BuildExtWithCuda(build_ext):
    """Compiles csrc/cuda/*.cu with nvcc and links the objects into _C.

    A compile error stops the build: CUDA is never dropped silently."""

    def build_extensions(self):
        nvcc, cuda_root, cu_sources = cuda_wanted()
        if nvcc:
            archs = [a.strip() for a in
                     os.environ.get("ALEXNET_C_CUDA_ARCHS", "75;80;86;89;90").replace(",", ";").split(";")
                     if a.strip()]
            gencode = []
            for a in archs:
                gencode += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
            gencode += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
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
                cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "-Icsrc",
                       "-Xcompiler", "-fPIC", "-Xcompiler", "-Wall", "-Xcompiler", "-fvisibility=hidden",
                       "--expt-relaxed-constexpr", "-DALEXNET_C_WITH_CUDA"] + gencode
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


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExtWithCuda})
