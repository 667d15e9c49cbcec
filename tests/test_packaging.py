"""Packaging: one version, the sdist's contents, the typing markers.

The wheel itself (built from the sdist, repaired with auditwheel, installed
without a compiler) is proved by tools/wheel_proof.sh, which CI runs.
"""

import ast
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import ckbn

ROOT = Path(__file__).resolve().parent.parent


def _literal_version():
    """``__version__`` as written in ckbn/__init__.py, read without importing."""
    tree = ast.parse((ROOT / "ckbn" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("no __version__ = ... in ckbn/__init__.py")


def test_version_is_written_once_and_shown():
    version = _literal_version()
    assert ckbn.__version__ == version
    # PEP 440
    assert re.fullmatch(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", version), version
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic\s*=\s*\["version"\]', pyproject, re.M)
    assert 'version = {attr = "ckbn.__version__"}' in pyproject
    assert not re.search(r'^version\s*=\s*"', pyproject, re.M)   # no second copy
    buf = io.StringIO()
    ckbn.show_config(file=buf)
    assert f"ckbn: {version}" in buf.getvalue()


def test_typing_markers_ship_with_the_packages():
    pyproject = (ROOT / "pyproject.toml").read_text()
    for pkg in ("ckbn", "keras_plugin"):
        assert (ROOT / pkg / "py.typed").is_file()
    assert re.search(r'^ckbn = \[.*"py\.typed".*"\*\.pyi".*\]', pyproject, re.M)
    assert re.search(r'^keras_plugin = \[.*"py\.typed".*"native/\*\*/\*".*\]', pyproject, re.M)


def _git_files(*paths):
    out = subprocess.run(["git", "ls-files", "--", *paths], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return {line for line in out.stdout.splitlines() if line}


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("sdist")
    # Without isolation: the running environment has the build requirements
    # (requirements-test.txt); the full isolated build is tools/wheel_proof.sh.
    res = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation",
                          "--skip-dependency-check",
                          "--outdir", str(out), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (path,) = out.glob("ckbn-*.tar.gz")
    with tarfile.open(path) as tar:
        names = tar.getnames()
        prefix = names[0].split("/")[0]
        pkg_info = tar.extractfile(f"{prefix}/PKG-INFO").read().decode()
    shutil.rmtree(out)
    return path.name, prefix, {n[len(prefix) + 1:] for n in names if "/" in n}, pkg_info


@pytest.mark.slow
def test_sdist_has_what_a_build_needs(sdist_names):
    name, prefix, names, pkg_info = sdist_names
    assert prefix == f"ckbn-{ckbn.__version__}"
    assert re.search(rf"^Version: {re.escape(ckbn.__version__)}$", pkg_info, re.M)
    needed = {"setup.py", "pyproject.toml", "LICENSE", "README.md", "MANIFEST.in",
              "ckbn/py.typed", "keras_plugin/py.typed"}
    # Every tracked source of the kernels, the C header, the native ops'
    # sources, the packages' modules and stubs.
    needed |= _git_files("pyx", "ckbn", "keras_plugin")
    missing = sorted(needed - names)
    assert not missing, f"missing from the sdist: {missing}"


@pytest.mark.slow
def test_sdist_has_nothing_a_build_does_not_need(sdist_names):
    name, prefix, names, pkg_info = sdist_names
    bad = [n for n in names if
           n.endswith((".so", ".pyd", ".o", ".pyc"))
           or "__pycache__" in n or ".pytest_cache" in n or ".hypothesis" in n
           or n.startswith(("build/", "dist/", ".venv/", "docs/_build/"))
           or n == "ckbn/_build_info.py"
           or (n.startswith("pyx/") and n.endswith((".c", ".cpp", ".html")))]
    assert not bad, f"build outputs or caches in the sdist: {bad}"
    # Generated C is absent, so a build from the sdist must cythonize the
    # sources it carries.
    assert any(n.startswith("pyx/") and n.endswith(".pyx") for n in names)
