"""The NumPy training example runs and learns."""

import os
import runpy

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def test_train_mlp_learns(capsys):
    mod = runpy.run_path(os.path.join(EXAMPLES, "train_mlp.py"))
    loss, acc = mod["main"](epochs=3)
    out = capsys.readouterr().out
    first_loss = float(out.splitlines()[0].split()[3])
    assert loss < first_loss
    assert acc > 0.55          # three classes: chance is 1/3
