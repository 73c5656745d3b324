# -*- Python -*-
# lit configuration of the sq test suite.

import os
import sys

import lit.formats
from lit.llvm import llvm_config

config.name = "SQ"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "README.md", "lit.cfg.py", "lit.site.cfg.py",
                   "fuzz"]  # test/fuzz: libFuzzer targets and inputs, not lit tests

config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.sq_obj_root, "test")

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

# %sq_python: a python3 that loads a compiled model.so (ctypes). In
# sanitizer builds the model.so references the ASan/UBSan runtime, which our
# executables carry but python3 does not: preload its shared form. (Not named
# %python_...: lit.llvm's %python is substituted first and would match.)
python_preload = []
if getattr(config, "sq_sanitizers", ""):
    import subprocess
    is_clang = "clang" in os.path.basename(getattr(config, "sq_cxx_compiler", ""))
    for name in (["libclang_rt.asan-x86_64.so"] if is_clang
                 else ["libasan.so", "libubsan.so"]):
        try:
            path = subprocess.run(
                [config.sq_cxx_compiler, "-print-file-name=" + name],
                capture_output=True, text=True).stdout.strip()
        except OSError:
            path = ""
        if os.path.isabs(path) and os.path.exists(path):
            python_preload.append(path)
config.substitutions.append(("%sq_python", (
    "env LD_PRELOAD=" + ":".join(python_preload) + " " if python_preload
    else "") + sys.executable))
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(("%sq_src_root", config.sq_src_root))
config.substitutions.append(("%sq_obj_root", config.sq_obj_root))

tool_dirs = [os.path.join(config.sq_obj_root, "bin"), config.llvm_tools_dir]
llvm_config.add_tool_substitutions(["sq-opt", "sq-translate", "sq-run", "sq-compile", "mlir-opt"], tool_dirs)

# Real models and data from ../shared/data (see its SOURCES.md): tests that
# use them declare "REQUIRES: shared-data" and are skipped without them.
shared_data = os.environ.get(
    "SQ_SHARED_DATA",
    os.path.join(config.sq_src_root, "..", "shared", "data"))
if os.path.isdir(os.path.join(shared_data, "wiki2-byte-llama")):
    config.available_features.add("shared-data")
config.substitutions.append(("%shared_data", os.path.abspath(shared_data)))

# Sanitizer builds (scripts/test.sh --asan): feature "sanitizers".
if getattr(config, "sq_sanitizers", ""):
    config.available_features.add("sanitizers")

# The Python binding's test needs numpy in the Python that runs lit.
try:
    import numpy  # noqa: F401
    config.available_features.add("numpy")
except ImportError:
    pass

# NVPTX: the CUDA toolkit's ptxas assembles the PTX of the GPU kernel library
# (lib/Conversion/SQToNVVM). Tests that need it declare "REQUIRES: ptxas".
_ptxas = None
for _root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
    if _root and os.path.exists(os.path.join(_root, "bin", "ptxas")):
        _ptxas = os.path.join(_root, "bin", "ptxas")
        break
if _ptxas:
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", _ptxas))

# sq-compile --target=nvptx links libdevice from the CUDA toolkit: tests that
# compile GPU models declare "REQUIRES: cuda-toolkit".
for _root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
    if _root and os.path.exists(os.path.join(_root, "nvvm", "libdevice", "libdevice.10.bc")):
        config.available_features.add("cuda-toolkit")
        break

# A usable GPU (the driver loads, cuInit succeeds, a device exists): the GPU
# execution tests need it; the "no device" tests are UNSUPPORTED with it.
def _cuda_device():
    try:
        import ctypes
        cuda = ctypes.CDLL("libcuda.so.1")
        if cuda.cuInit(0) != 0:
            return False
        count = ctypes.c_int(0)
        return cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except (OSError, AttributeError):
        return False
if _cuda_device():
    config.available_features.add("cuda-device")

# onnxruntime as a numeric oracle: node with the npm package onnxruntime-node
# (bench/vs_onnxruntime.sh installs it into build/ort), found through
# SQ_ORT_NODE_MODULES, NODE_PATH or <build>/ort/node_modules. Tests that run
# bench/ort_runner.js declare "REQUIRES: onnxruntime".
import shutil as _shutil
_ort_dirs = [os.environ.get("SQ_ORT_NODE_MODULES", "")]
_ort_dirs += os.environ.get("NODE_PATH", "").split(os.pathsep)
_ort_dirs.append(os.path.join(config.sq_obj_root, "ort", "node_modules"))
for _d in _ort_dirs:
    if _d and os.path.isdir(os.path.join(_d, "onnxruntime-node")) and _shutil.which("node"):
        config.available_features.add("onnxruntime")
        config.environment["NODE_PATH"] = os.path.abspath(_d)
        break
