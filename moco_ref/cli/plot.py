"""``moco-ref plot``: a run's training curves as a PNG (the drawing: moco_ref/tools/plot.py)."""

from __future__ import annotations

import click

from moco_ref.cli.options import force_option
from moco_ref.tools.plot import plot_run


@click.command(short_help="Draw a run's training curves to a PNG (needs matplotlib).")
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="The PNG to write. [default: RUN_DIR/curves.png]")
@force_option
def plot(run_dir, out, force):
    """Draw loss, instance accuracy, kNN top-1 and lr of a run to a PNG (needs matplotlib).

    matplotlib is an optional extra: pip install 'moco-ref[plot]'.
    """
    click.echo(f"wrote {plot_run(run_dir, out, force)}")
