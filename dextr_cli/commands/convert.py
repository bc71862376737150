"""``dextr convert``: turn a legacy DEXTR model file into a dextr checkpoint."""
from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated

from .._console import console, esc
from .._options import expand_files


def convert(
    src: Annotated[Path, typer.Argument(
        help="A dextr 0.1.2 model file, an original DEXTR-PyTorch state dict, or a dextr checkpoint.",
        callback=expand_files, show_default=False)],
    dst: Annotated[Path, typer.Argument(help="The dextr checkpoint to write (.pt).", dir_okay=False,
                                        show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Overwrite DST if it exists.")] = False,
) -> None:
    """Convert a legacy model file (dextr 0.1.2 or DEXTR-PyTorch) into a dextr checkpoint.

    Pickled dextr 0.1.2 models are read without running any code from the file.

    Examples:
        dextr convert dextr_pascalvoc_resunet101-a2d81727.pth resunet101-voc.pt
        dextr convert dextr_pascal-sbd.pth pascal-sbd.pt
    """
    if dst.exists() and not force:
        raise typer.BadParameter(f"{dst} exists; pass --force to overwrite it", param_hint="DST")
    from dextr_lib.utils.fileio import check_outputs
    from dextr_lib.weights import loading  # the library loads torch: only when a command runs

    check_outputs([(dst, "DST", "checkpoint")], inputs=[src], force=force)

    note = loading.convert(src, dst)
    what = note or "already a dextr checkpoint; copied"
    console.print(f"Wrote {esc(dst)} ({esc(what)})", highlight=False)
