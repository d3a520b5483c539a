"""The README's Python examples run as they are, and the package's documentation renders in
help()."""

import os
import pydoc
import re

import pytest

import plastic
from conftest import REPO


def readme_python_blocks():
    text = (REPO / "README.md").read_text()
    section = text.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_the_three_examples():
    blocks = readme_python_blocks()
    assert len(blocks) == 3
    assert "np." in blocks[0] and "Conv2d" in blocks[1] and "plastic.train" in blocks[2]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    if index == 1:
        pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    code = readme_python_blocks()[index]
    exec(compile(code, f"README.md example {index + 1}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()
    if index == 2:
        assert os.path.exists(tmp_path / "runs" / "py-cue" / "test.json")


def test_help_renders_the_documentation():
    text = pydoc.render_doc(plastic, renderer=pydoc.plaintext)
    for phrase in ("recurrent networks with synaptic plasticity", "class Network",
                   "loss_and_grad(", "vector-Jacobian product", "train(",
                   "load_run(", "plasticity rate", "set_parameters("):
        assert phrase in text, phrase
    # every public name is documented
    for name in plastic.__all__:
        assert getattr(plastic, name).__doc__, name
    for name in ("forward", "loss_and_grad", "vjp", "parameters", "set_parameters", "load"):
        assert getattr(plastic.Network, name).__doc__, name


def test_help_of_the_torch_module():
    torch_module = pytest.importorskip("plastic.torch")
    text = pydoc.render_doc(torch_module, renderer=pydoc.plaintext)
    assert "class PlasticRNN" in text and "vector-Jacobian product" in text
    for name in ("forward", "loss", "diagnostics", "from_network", "to_network"):
        assert getattr(torch_module.PlasticRNN, name).__doc__, name
