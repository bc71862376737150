"""Build a dataset from the dataset settings group (``--dataset``, ``--image-pat``... merged with
the config's table)."""
from __future__ import annotations

from dextr_lib.config import DatasetSettings, PathsSettings, check_dataset

from ._console import warn
from ._progress import progress_bar


def open_dataset(s: DatasetSettings, paths: PathsSettings, *, split: str, points_from: str = "annotations"):
    """The :class:`~dextr_lib.data.ObjectDataset` the settings describe, indexed with a progress
    bar; unmatched files are reported as yellow warnings. ``label_ignore_index`` -1 means none.

    Raises:
        ConfigError: missing or contradictory settings (:func:`dextr_lib.config.check_dataset`,
            one line naming ``[table] key`` and the option).
        DatasetError: files that do not form a dataset.
    """
    check_dataset(s)
    from dextr_lib.data import build_dataset

    ignore = None if s.label_ignore_index is not None and s.label_ignore_index < 0 else s.label_ignore_index
    with progress_bar("Indexing dataset") as update:
        return build_dataset(
            s.dataset, image_pat=s.image_pat or None, target_pat=s.target_pat or None, split=split,
            pascal_voc_root=paths.pascal_voc, sbd_root=paths.sbd, ignore_index=ignore,
            min_object_area=s.min_object_area, whole_labels=s.whole_labels,
            on_progress=update, on_warning=warn,
            annotations=s.annotations, images_dir=s.images, categories=s.categories or None,
            points_from=points_from,
        )
