"""Types: the stubs match the compiled modules, and mypy --strict passes on
examples/ and tests/test_typing_usage.py, and fails on a misuse."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ckbn

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ["ckbn._cpu"] + [f"ckbn._{kind}_{v}" for kind in ("kernels", "probes")
                            for v in ("base", "avx2", "avx512")]


def _mypy(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _built():
    """The compiled modules that exist and that this CPU can import (importing
    the AVX-512 variant elsewhere is an illegal instruction)."""
    from ckbn._dispatch import available_kernels

    names = ["ckbn._cpu"]
    for v in available_kernels():
        names += [f"ckbn._kernels_{v}", f"ckbn._probes_{v}"]
    return names


def test_stubs_match_the_compiled_modules():
    names = _built()
    assert "ckbn._kernels_base" in names and "ckbn._cpu" in names
    for name in names:
        assert (ROOT / (name.replace(".", "/") + ".pyi")).is_file(), name
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "mypy.stubtest", "--allowlist",
                          str(ROOT / "tools" / "stubtest-allowlist.txt"), *names],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def test_kernel_stubs_are_one_stub():
    """_kernels_base.pyi is the one stub of the three kernel modules (one
    source): its __all__ names exactly what it defines, and the stubs of the
    SIMD variants only re-export it (stubtest above checks all three against
    the compiled modules, so a re-export that lost a name fails there)."""
    tree = ast.parse((ROOT / "ckbn" / "_kernels_base.pyi").read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    defined |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    listed = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
              and [t.id for t in n.targets] == ["__all__"]]
    assert len(listed) == 1
    assert sorted(listed[0]) == sorted(d for d in defined if not d.startswith("_"))
    for v in ("avx2", "avx512"):
        text = (ROOT / "ckbn" / f"_kernels_{v}.pyi").read_text()
        assert text.startswith(f"# Type stub of ckbn._kernels_{v}")
        body = ast.parse(text).body
        assert body and all(isinstance(n, ast.ImportFrom) and n.module == "ckbn._kernels_base"
                            for n in body), v
        assert sorted(a.name for n in body for a in n.names) == ["*", "__all__"], v


def _public(module):
    return [n for n in module.__all__ if not n.startswith("__")]


def test_usage_file_uses_every_public_name():
    import ckbn.distributed
    import ckbn.nn

    text = (ROOT / "tests" / "test_typing_usage.py").read_text()
    used = {node.attr for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Attribute)}
    missing = [f"ckbn.{n}" for n in _public(ckbn) if n not in used]
    missing += [f"ckbn.nn.{n}" for n in _public(ckbn.nn) if n not in used]
    missing += [f"ckbn.distributed.{n}" for n in _public(ckbn.distributed) if n not in used]
    try:
        import keras_plugin
    except ImportError:
        pass
    else:
        missing += [f"keras_plugin.{n}" for n in _public(keras_plugin) if n not in used]
    assert "__version__" in used
    assert not missing, f"public names the typing usage file does not use: {missing}"


@pytest.mark.slow
def test_mypy_strict_passes_on_examples_and_the_usage_file():
    out = _mypy("--strict", "examples", "tests/test_typing_usage.py")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found in 5 source files" in out.stdout


MISUSE = '''
import numpy as np
import ckbn
import ckbn.nn

x = np.ones((4, 3), np.float32)
y, mean, var = ckbn.nn.fused_batch_norm(x, np.ones(3), np.zeros(3), epsilon="big")
ckbn.set_num_threads("4")
n: str = ckbn.get_num_threads()
'''


@pytest.mark.slow
def test_mypy_strict_rejects_a_misuse(tmp_path):
    bad = ROOT / "tests" / "_typing_misuse_tmp.py"
    bad.write_text(MISUSE)
    try:
        out = _mypy("--strict", str(bad.relative_to(ROOT)))
    finally:
        bad.unlink()
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 3, out.stdout
    assert re.search(r':7: error: Argument "epsilon" to "fused_batch_norm" has incompatible '
                     r'type "str"; expected "float"', out.stdout), out.stdout
    assert re.search(r':8: error: Argument 1 to "set_num_threads" has incompatible type "str"',
                     out.stdout), out.stdout
    assert re.search(r':9: error: Incompatible types in assignment', out.stdout), out.stdout
