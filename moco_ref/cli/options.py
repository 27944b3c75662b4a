"""The options of ``moco-ref train`` (and of ``moco-ref ablate``, which trains the same recipe), generated
from the configuration's declarations in moco_ref/run/config.py: one click option per setting, with its
flag, help, range and default.  Every float option, here and in the other commands, is a
:class:`FiniteFloatRange`: NaN and ±inf are refused with the range.
"""

from __future__ import annotations

import math
from typing import Any

import click

from moco_ref.run.config import OPTIONS, Option, TrainConfig, shown

PLOT_NOTE = "pip install 'moco-ref[plot]'"  # what a command that draws says when matplotlib is missing


def force_option(command):
    """--force: the command may replace the file its --out names (without it, a file there is refused)."""
    return click.option("--force", is_flag=True, help="Replace the file --out names if it exists.")(command)


def parse_schedule(ctx, param, value):
    """Parses "120,160" into [120, 160] (the epochs of a step schedule)."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.replace(" ", "").split(",") if v]
    except ValueError:
        raise click.BadParameter("give epochs separated by commas, e.g. 120,160") from None


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange that also refuses NaN and ±inf (which pass its comparisons: nan < 0 is False)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


def _click_type(declared: Option, default):
    """The click type of a declared option: its choices, its range, or plainly the default's type."""
    if declared.choices:
        return click.Choice(declared.choices)
    low = declared.at_least if declared.greater_than is None else declared.greater_than
    if isinstance(default, float):
        return FiniteFloatRange(low, declared.at_most, min_open=declared.greater_than is not None)
    if low is None and declared.at_most is None:
        return type(default)
    low_int, high_int = (None if bound is None else int(bound) for bound in (low, declared.at_most))
    return click.IntRange(low_int, high_int, min_open=declared.greater_than is not None)


def config_options(defaults: dict | None = None):
    """A decorator that adds one click option per TrainConfig field, generated from its declaration
    (moco_ref.run.config.OPTIONS).

    Every option defaults to None, so that only the flags given on the command line override a preset
    or a resumed run's configuration; the help shows the default of ``defaults`` (a command's own, such as
    ablate's), else the dataclass default.
    """
    helped = {**TrainConfig().to_dict(), **(defaults or {})}

    def decorate(command):
        for name, declared in reversed(OPTIONS.items()):  # click lists options in the reverse order of decoration
            command = _option(name, declared, helped[name])(command)
        return command

    return decorate


def _option(name: str, declared: Option, helped):
    """The click option of one setting; its kind (flag, list, number, choice) follows the dataclass default."""
    default = getattr(TrainConfig(), name)
    settings: dict[str, Any] = {"help": f"{declared.help} [default: {shown(helped)}]", "default": None}
    flags = declared.flags
    if isinstance(default, bool):
        if "/" not in flags[-1]:
            flags = (f"{declared.flag}/--no-{declared.flag[2:]}",)
    elif isinstance(default, list):
        settings["callback"] = parse_schedule
    else:
        settings["type"] = _click_type(declared, default)
    return click.option(*flags, name, **settings)
