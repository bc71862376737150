"""Build a dataset from the shared dataset options (``--dataset``, ``--image-pat``, ...)."""
from __future__ import annotations

from typing import Callable, List, Optional

import typer

from dextr_lib.config import PathsConfig

from ._console import err_console, esc
from ._progress import progress_bar


def open_dataset(
    kind: Optional[str],
    image_pat: Optional[List[str]],
    target_pat: Optional[List[str]],
    *,
    split: str,
    ignore_index: Optional[int],
    min_object_area: int,
    paths: PathsConfig,
    whole_labels: bool = False,
    on_warning: Optional[Callable[[str], None]] = None,
    annotations: Optional[str] = None,
    images_dir: Optional[str] = None,
    categories: Optional[List[str]] = None,
    points_from: Optional[str] = None,
):
    """The :class:`~dextr_lib.data.ObjectDataset` the options describe, indexed with a progress
    bar; unmatched files are reported as yellow warnings. ``ignore_index`` -1 means none.

    Raises:
        typer.BadParameter: a missing or contradictory option (usage error, exit 2).
        DatasetError: files that do not form a dataset.
    """
    from dextr_lib.data import KINDS, build_dataset

    if kind is None:
        raise typer.BadParameter(f"choose a dataset kind: {', '.join(KINDS)}", param_hint="--dataset")
    if kind not in KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(KINDS)}, got {kind!r}", param_hint="--dataset")
    coco_opts = annotations is not None or images_dir is not None or bool(categories)
    if kind == "coco":
        if annotations is None:
            raise typer.BadParameter("--dataset coco needs --annotations instances.json (and --images DIR)",
                                     param_hint="--annotations")
        if image_pat or target_pat:
            raise typer.BadParameter("--dataset coco reads its images from --annotations and --images; "
                                     "--image-pat/--target-pat are for custom datasets",
                                     param_hint="--image-pat")
        if points_from is not None and points_from not in ("annotations", "masks"):
            raise typer.BadParameter(f"expected annotations or masks, got {points_from!r}",
                                     param_hint="--points-from")
    elif coco_opts:
        raise typer.BadParameter("--annotations, --images and --categories are for --dataset coco",
                                 param_hint="--annotations")
    elif kind == "pascal_voc":
        if image_pat or target_pat:
            raise typer.BadParameter("pascal_voc finds its files under [paths] pascal_voc; "
                                     "--image-pat/--target-pat are for custom datasets",
                                     param_hint="--image-pat")
    elif not image_pat or not target_pat:
        raise typer.BadParameter(f"--dataset {kind} needs both --image-pat and --target-pat",
                                 param_hint="--image-pat")

    def warn(message: str) -> None:
        err_console.print(f"[yellow]Warning:[/] {esc(message)}", highlight=False, soft_wrap=True)
        if on_warning is not None:  # e.g. a training job's log.txt
            on_warning(message)

    with progress_bar("Indexing dataset") as update:
        return build_dataset(
            kind, image_pat=image_pat, target_pat=target_pat, split=split,
            pascal_voc_root=paths.pascal_voc, sbd_root=paths.sbd,
            ignore_index=None if ignore_index is not None and ignore_index < 0 else ignore_index,
            min_object_area=min_object_area, whole_labels=whole_labels,
            on_progress=update, on_warning=warn,
            annotations=annotations, images_dir=images_dir, categories=categories or None,
            points_from=points_from or "annotations",
        )
