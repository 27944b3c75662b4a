"""``moco-ref gradcheck``: every hand-derived gradient against float64 finite differences
(the checks: moco_ref/tools/gradcheck.py)."""

from __future__ import annotations

import sys

import click

from moco_ref.tools.gradcheck import run_all


@click.command()
@click.option("--seed", default=0, show_default=True, help="Seed of the random inputs.")
def gradcheck(seed):
    """Check every hand-derived gradient against float64 finite differences.

    Prints one row per layer and input: the relative error max|analytic − numeric| / max|·|
    and pass/fail against 1e-6 (layers) or 1e-5 (the whole encoder, along random directions).
    Exits with 1 if any check fails.
    """
    results = run_all(seed)
    width = max(len(r.name) for r in results)
    click.echo(f"{'check'.ljust(width)}  max rel. error  tolerance  result")
    for r in results:
        click.echo(f"{r.name.ljust(width)}  {r.error:14.2e}  {r.tolerance:9.0e}  {'pass' if r.passed else 'FAIL'}")
    failed = [r for r in results if not r.passed]
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    for r in failed:
        click.echo(r.describe(), err=True)
    sys.exit(1 if failed else 0)
