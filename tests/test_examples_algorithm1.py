"""The Algorithm 1 walk-through in examples/ runs, prints every line of the pseudo-code, and agrees with MoCo.step."""

import importlib.util
import math
import re
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "algorithm1.py"


@pytest.fixture(scope="module")
def printed():
    """The standard output of examples/algorithm1.py's main()."""
    import contextlib
    import io

    spec = importlib.util.spec_from_file_location("algorithm1", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        module.main()
    return buffer.getvalue()


def printed_value(text, name):
    """The number printed after '<name> =' on the first line that shows it."""
    match = re.search(rf"^\s+{re.escape(name)}\s+= (\S+)", text, flags=re.MULTILINE)
    assert match, f"no line shows {name!r}"
    return float(match.group(1))


def test_example_prints_every_line_of_algorithm1(printed):
    """Each line of the paper's pseudo-code is printed, with the shapes of l_pos (N, 1), l_neg (N, K) and
    logits (N, 1+K)."""
    for code in (
        "f_k.params = f_q.params",
        "x_q = aug(x)",
        "x_k = aug(x)",
        "q = f_q.forward(x_q)",
        "k = f_k.forward(x_k)",
        "k = k.detach()",
        "l_pos = bmm(",
        "l_neg = mm(",
        "logits = cat(",
        "labels = zeros(N)",
        "loss = CrossEntropyLoss(logits/t, labels)",
        "loss.backward()",
        "update(f_q.params)",
        "f_k.params = m*f_k.params+(1-m)*f_q.params",
        "enqueue(queue, k)",
        "model.step(x_q, x_k)",
    ):
        assert f">>> {code}" in printed, f"missing the line {code!r}"
    assert re.search(r"l_pos\s+\(8, 1\)", printed)
    assert re.search(r"l_neg\s+\(8, 32\)", printed)
    assert re.search(r"logits\s+\(8, 33\)", printed)


def test_example_loss_is_finite_and_matches_moco_step(printed):
    """The printed loss is finite and non-negative, and MoCo.step's loss agrees with the loss by hand."""
    loss = printed_value(printed, "loss")
    assert math.isfinite(loss) and loss >= 0.0, f"loss {loss!r}"
    assert printed_value(printed, "|Δ loss|") < 1e-9
    assert printed_value(printed, "|Δ queue|") < 1e-9
