"""The native-op build cache under concurrency: two processes that need the
same library at once compile it once, and both load a complete library."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.twin import compiled_only

ROOT = Path(__file__).resolve().parent.parent

SOURCE = 'extern "C" int ckbn_cache_probe(int x) { return 3 * x + 1; }\n'

# Builds the library through the real cache and compiler; prints its path.
# The module is loaded from its file: importing the keras_plugin package
# would load Keras and a backend (and build that backend's own ops).
BUILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("native_build", sys.argv[2])
nb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nb)
print(nb.build_library("cache_probe", [sys.argv[1]]))
"""


def _real_cxx():
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    return cxx


def test_concurrent_builds_compile_once(tmp_path):
    cxx = _real_cxx()
    src = tmp_path / "src" / "probe.cc"
    src.parent.mkdir()
    src.write_text(SOURCE)
    calls = tmp_path / "calls.log"
    # The compiler, wrapped: each run leaves a line, then waits long enough
    # that the two processes overlap, then compiles for real.
    wrapper = tmp_path / "cxx.sh"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{calls}"\nsleep 2\nexec "{cxx}" "$@"\n')
    wrapper.chmod(0o755)
    env = dict(os.environ, CXX=str(wrapper), CKBN_CACHE_DIR=str(tmp_path / "cache"),
               CKBN_NATIVE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    module = str(ROOT / "keras_plugin" / "_native_build.py")
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(src), module], env=env,
                              cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1
    (path,) = paths
    assert calls.read_text().splitlines() == ["run"]          # one compile, not two
    built = sorted(os.listdir(tmp_path / "cache" / "native"))
    assert built == sorted([os.path.basename(path), os.path.basename(path) + ".lock"])
    lib = ctypes.CDLL(path)
    assert lib.ckbn_cache_probe(4) == 13


def _build_native(*args, **env):
    run_env = dict(os.environ, KERAS_BACKEND="torch", **env)
    run_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "keras_plugin.build_native", *args],
                          env=run_env, cwd=str(ROOT), capture_output=True, text=True,
                          timeout=600)


@compiled_only("has no C-level table, which the native ops call: they are not built on it")
def test_build_native_command_builds_and_reports():
    """``python -m keras_plugin.build_native``: the library's path (the same again from
    the cache), exit 0; with ``CKBN_NATIVE=0`` the reason, exit 1."""
    pytest.importorskip("torch")
    _real_cxx()
    first = _build_native("--frameworks", "torch")
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    line = [s for s in first.stdout.splitlines() if s.startswith("torch: ")][-1]
    path = line[len("torch: "):]
    assert os.path.isfile(path) and "ckbn_torch_ops" in path
    again = _build_native("--frameworks", "torch")
    assert again.returncode == 0 and f"torch: {path}" in again.stdout
    off = _build_native("--frameworks", "torch", CKBN_NATIVE="0")
    assert off.returncode == 1
    assert "torch: not built" in off.stdout and "CKBN_NATIVE=0" in off.stdout
