"""``moco-ref bench learn --drift EVERY``: how far apart the paired runs are, layer by layer, as they train.

Every EVERY steps (and before the first and after the last), for each layer L — each parameter tensor of
encoder_q, each BatchNorm's running mean and running variance, and the queue — the relative distance

    d_L(a, b) = ‖a_L − b_L‖ / ‖b_L‖      (Frobenius norms, in float64; ‖a_L − b_L‖ where ‖b_L‖ = 0)

between ours and the PyTorch twin, and, with --control, between PyTorch′ (the twin one ulp off at the start)
and the twin.  PyTorch′ differs from PyTorch by rounding only, so its curve is how fast rounding alone is
amplified; ours drifting away faster than PyTorch′ does is what a systematic difference would look like.

The record of one seed (its run record's "drift"):

    {"every": EVERY, "layers": [name, ...], "steps": [global step, ...],
     "ours_vs_pytorch": [[d_L for L in layers] for each step],
     "control_vs_pytorch": the same for PyTorch′ (only with --control)}
"""

from __future__ import annotations

import numpy as np

from backends import to_numpy

QUEUE = "queue"


def norm(x) -> float:
    """‖x‖, scaled by max |x| first, so that a one-ulp difference of zeros (subnormal numbers, whose squares
    underflow to 0) still has a norm above 0."""
    largest = float(np.max(np.abs(x))) if np.size(x) else 0.0
    return largest * float(np.linalg.norm(x / largest)) if largest > 0 else 0.0


def relative_distance(a, b) -> float:
    """‖a − b‖ / ‖b‖ in float64 (‖a − b‖ where b is all zeros)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    difference, size = norm(a - b), norm(b)
    return difference / size if size > 0 else difference


def drift_layers(encoder) -> list[str]:
    """The layers measured: encoder_q's parameters and floating buffers (running mean and variance), in
    state_dict order, then the queue."""
    return [name for name, value in encoder.state_dict().items() if np.dtype(value.dtype).kind == "f"] + [QUEUE]


def twin_arrays(twin) -> dict:
    """{layer: host array} of a TorchMoCo: its encoder_q's state and its queue."""
    arrays = {name: tensor.detach().cpu().numpy() for name, tensor in twin.encoder_q.state_dict().items()}
    arrays[QUEUE] = twin.queue.detach().cpu().numpy()
    return arrays


def our_arrays(model) -> dict:
    """{layer: host array} of our MoCo: its encoder_q's state and its queue (D, K)."""
    arrays = {name: to_numpy(value) for name, value in model.encoder_q.state_dict().items()}
    arrays[QUEUE] = to_numpy(model.queue.state_dict()["queue"])
    return arrays


class Drift:
    """Records the layer distances of a PairedTraining every ``every`` steps (its ``observe`` after each step)."""

    def __init__(self, every: int, layers: list[str], control: bool):
        self.every, self.layers, self.control = every, layers, control
        self.steps: list[int] = []
        self.ours: list[list[float]] = []
        self.controls: list[list[float]] = []

    def observe(self, pair, force: bool = False) -> None:
        """Measures now if the step is due (a multiple of ``every``) or ``force``d, and not measured yet."""
        step = pair.global_step
        if (self.steps and self.steps[-1] == step) or not (force or step % self.every == 0):
            return
        pytorch = twin_arrays(pair.twin)
        ours = our_arrays(pair.model)
        self.steps.append(step)
        self.ours.append([relative_distance(ours[name], pytorch[name]) for name in self.layers])
        if self.control:
            control = twin_arrays(pair.control)
            self.controls.append([relative_distance(control[name], pytorch[name]) for name in self.layers])

    def record(self) -> dict:
        """The seed's drift record (module docstring)."""
        record = {"every": self.every, "layers": self.layers, "steps": self.steps, "ours_vs_pytorch": self.ours}
        if self.control:
            record["control_vs_pytorch"] = self.controls
        return record


class NoDrift:
    """No --drift: observes nothing and records nothing."""

    def observe(self, pair, force: bool = False) -> None:
        pass

    def record(self) -> None:
        return None


def summary_lines(seed: int, record: dict, points: int = 5) -> list[str]:
    """A few lines on one seed's drift: the median over layers at up to ``points`` recorded steps, for ours
    and PyTorch′, and the layer farthest from PyTorch at the last step."""
    steps = record["steps"]
    count = min(points, len(steps))
    shown = sorted({round(i * (len(steps) - 1) / max(count - 1, 1)) for i in range(count)})  # first to last
    series = [("ours − PyTorch", record["ours_vs_pytorch"])]
    if "control_vs_pytorch" in record:
        series.append(("PyTorch′ − PyTorch", record["control_vs_pytorch"]))
    lines = [f"seed {seed} drift, median over {len(record['layers'])} layers of ‖a − b‖/‖b‖:"]
    for label, values in series:
        medians = ", ".join(f"step {steps[i]} {np.median(values[i]):.2e}" for i in shown)
        lines.append(f"  {label}: {medians}")
    for label, values in series:
        last = values[-1]
        worst = int(np.argmax(last))
        lines.append(f"  {label} at step {steps[-1]}: largest {last[worst]:.2e} in {record['layers'][worst]}")
    return lines
