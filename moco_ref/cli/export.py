"""``moco-ref export``: encoder_q as a PyTorch state_dict (the file: moco_ref/tools/export.py)."""

from __future__ import annotations

import click

from moco_ref.cli.options import force_option
from moco_ref.run.directory import checkpoint_of
from moco_ref.tools.export import export_encoder, loading_snippet


@click.command(short_help="Write encoder_q as a PyTorch state_dict (.npz, .safetensors).")
@click.option("--checkpoint", required=True, type=click.Path(), help="A checkpoint file or run directory.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="FILE.npz, or FILE.safetensors (also writes FILE.npz; needs the safetensors package).",
)
@click.option("--keep-fc", is_flag=True, help="Keep the fc head (default: dropped, as the official recipe).")
@force_option
def export(checkpoint, out, keep_fc, force):
    """Export encoder_q as a PyTorch state_dict with torchvision names (encoder_q. stripped, fc dropped).

    Prints the files written and a snippet that loads them with torch.from_numpy.
    """
    result = export_encoder(checkpoint_of(checkpoint, "--checkpoint"), out, keep_fc, force)
    dropped = f", dropped {', '.join(result['dropped'])}" if result["dropped"] else ""
    for path in result["files"]:
        click.echo(f"wrote {path}")
    click.echo(f"{result['arrays']} arrays of {result['arch']} width {result['width']}{dropped}")
    click.echo("load it into PyTorch with:\n")
    click.echo(
        loading_snippet(
            result["files"][0], result["arch"], result["width"], result["dim"], bool(result["mlp"]), keep_fc
        )
    )
