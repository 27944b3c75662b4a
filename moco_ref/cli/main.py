"""The ``moco-ref`` command line: the group, its commands registered, and the console entry point.

One file per command (group): train (moco_ref/cli/train.py), ablate (ablate.py), show (show.py), gradcheck
(gradcheck.py), eval (evaluate.py), export (export.py), plot (plot.py) and bench (bench.py).

Every error a user can cause (a path, an image, a flag, a checkpoint, a
missing GPU) ends in one line on stderr and exit code 2; click's own usage
errors also exit with 2.
"""

from __future__ import annotations

import sys

import click

from backends import BackendUnavailable
from moco_ref.cli.ablate import ablate
from moco_ref.cli.bench import bench
from moco_ref.cli.evaluate import evaluate
from moco_ref.cli.export import export
from moco_ref.cli.gradcheck import gradcheck
from moco_ref.cli.plot import plot
from moco_ref.cli.show import show
from moco_ref.cli.train import train
from moco_ref.errors import UserError
from moco_ref.paths import refusal


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="moco-ref")
def cli():
    """moco-ref: MoCo (Momentum Contrast) from scratch on NumPy and CuPy, every gradient by hand.

    \b
    Start with:
      moco-ref train                 train on the built-in shapes, CPU-sized defaults
      moco-ref gradcheck             prove each hand-derived gradient by finite differences
    """


cli.add_command(train)
cli.add_command(ablate)
cli.add_command(show)
cli.add_command(gradcheck)
cli.add_command(evaluate)
cli.add_command(export)
cli.add_command(plot)
cli.add_command(bench)


def main(argv=None) -> None:
    """Console entry point: runs the CLI, turning user errors into one line and exit code 2."""
    try:
        rc = cli.main(args=argv, prog_name="moco-ref", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("moco-ref: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except (UserError, BackendUnavailable) as error:
        click.echo(f"moco-ref: error: {error}", err=True)
        sys.exit(2)
    except OSError as error:  # a path the OS refused where no entry point looked first
        if error.filename is None:
            raise
        click.echo(f"moco-ref: error: {refusal(error.filename, error)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("moco-ref: interrupted; the last checkpoint is kept", err=True)
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
