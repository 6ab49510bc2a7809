"""``awt bench``: run a benchmark config, print the summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer



def bench(
    config: Path = typer.Argument(..., help="Benchmark config (YAML): backbones, datasets, methods, settings.",
                                  show_default=False),
    output: Path = typer.Option(Path("runs/bench"), "--output", "-o",
                                help="Folder for run records (runs/), the summary files and the caches (cache/)."),
    force: bool = typer.Option(False, "--force", help="Run again the runs already on disk (feature and text caches "
                               "are still used)."),
    device: Optional[str] = typer.Option(None, "--device", help="Override the config's device: auto, cpu, cuda, "
                                         "cuda:1, ...", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    explain: int = typer.Option(0, "--explain", min=0, help="Then, per backbone and dataset with an awt run, explain "
                                "the K images where AWT and CLIP disagree most: OUTPUT/explain/.../index.html links "
                                "their reports."),
) -> None:
    """Run every (backbone, dataset, method) of a benchmark config; write one JSON per run and a summary.

    Runs already in OUTPUT are skipped (unless --force); image features are encoded once per (backbone,
    dataset, views, seed) and shared by all methods; an interrupted run resumes. Under torchrun
    (`torchrun --nproc-per-node=K -m awt bench ...`) the ranks share the encoding of every dataset.
    """
    from .. import distributed
    from ..bench.config import load_config
    from ..bench.report import markdown_table
    from ..bench.runner import run_bench

    from ..progress import show_progress

    cfg = load_config(config, device=device)
    if quiet:
        show_progress(False)
    try:
        result = run_bench(cfg, output, force=force)
    except KeyboardInterrupt:  # the sweep has said what is kept, in one line
        raise typer.Exit(130) from None
    finally:
        distributed.finish()
    if not distributed.ranks_from_env().main:
        return
    typer.echo(markdown_table(result.records))
    computed = sum(1 for f in result.feature_sets if f["source"] != "cached")
    typer.echo(
        f"\n{len(result.ran)} run(s) made, {len(result.skipped)} already on disk; "
        f"{computed} feature set(s) encoded, {len(result.feature_sets) - computed} loaded from cache; "
        f"{result.seconds:.1f} s", err=True)
    typer.echo("wrote " + ", ".join(str(p) for p in result.files.values()), err=True)
    if explain:
        from ..bench.gallery import explain_sweep

        pages = explain_sweep(cfg, output, explain)
        if pages:
            typer.echo("galleries: " + ", ".join(str(p) for p in pages), err=True)
