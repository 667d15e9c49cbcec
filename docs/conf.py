"""Sphinx configuration of ckbn's documentation site.

Build (from the repository root, with ckbn importable)::

    sphinx-build -W -b html docs docs/_build/html      # the site
    sphinx-build -W -b doctest docs docs/_build/doctest   # its examples, run
"""

import json
import os
import sys
from pathlib import Path

import ckbn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

project = "ckbn"
author = "the ckbn developers"
copyright = "2026, the ckbn developers"
release = ckbn.__version__          # the one version (ckbn/__init__.py)
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_generated"]
root_doc = "index"

# The Keras plugin is documented on the NumPy backend: no TensorFlow needed.
os.environ.setdefault("KERAS_BACKEND", "numpy")

autodoc_default_options = {"members": False}
autodoc_typehints = "none"          # the signatures show them; numpydoc has the prose
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()
myst_heading_anchors = 3
# The Markdown pages included from benchmarks/ link to raw result files of the
# repository (report.md, results/sync/), which the site does not carry; the
# reST pages' own cross-references still fail the build when broken.
suppress_warnings = ["myst.header", "myst.xref_missing"]

doctest_global_setup = """
import numpy as np
import ckbn
ckbn.reset_default_graph()
"""

html_theme = "alabaster"
html_title = f"ckbn {release}"
html_static_path = []


def _draw_benchmark_plots():
    """Draw the plots of every benchmark run kept in benchmarks/results/*/
    from its results.json, with benchmarks/run.py's own plot function, into
    docs/_generated/, and list them in _generated/plots.md (included by
    benchmarks.md).  matplotlib is required (requirements-docs.txt)."""
    import matplotlib  # noqa: F401 - fail the build here when it is missing

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run as bench_run

    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    lines = []
    for results in sorted((ROOT / "benchmarks" / "results").glob("*/results.json")):
        rows = json.loads(results.read_text()).get("rows") or []
        tag = results.parent.name
        (out / tag).mkdir(exist_ok=True)
        pngs = bench_run.plot(rows, str(out / tag)) if rows else []
        if pngs:
            lines.append(f"### `{tag}`\n")
            for png in pngs:
                name = os.path.basename(png)
                lines.append(f"![{tag} {name}]({tag}/{name})\n")
    (out / "plots.md").write_text("\n".join(lines) or "No benchmark run with rows to plot.\n")


_draw_benchmark_plots()
