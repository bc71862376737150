"""Expanding file patterns and pairing images with their target files by file stem.

A target belongs to its image by the stem rule of :mod:`dextr_lib.formats.targets` (the image whose
stem is the longest prefix of the target's stem ending at a separator): the same rule
``points-from-mask`` uses to find a mask's photo.
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from ..errors import DatasetError
from ..formats.targets import owner_stem, stem_of

PatternLike = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], None]
_DIGITS = re.compile(r"(\d+)")


def as_pattern_list(patterns: PatternLike) -> List[str]:
    """One pattern or several -> a list of pattern strings."""
    if patterns is None:
        return []
    if isinstance(patterns, (str, os.PathLike)):
        return [os.fspath(patterns)]
    return [os.fspath(p) for p in patterns]


def expand_patterns(patterns: PatternLike, what: str = "files") -> List[str]:
    """Expand glob patterns into a sorted, de-duplicated list of files.

    Each pattern is a glob (``**`` recurses), a plain path, or ``@LIST`` naming a text file whose
    non-empty, non-``#`` lines are paths or globs (relative to the list file's folder). Several
    patterns are united, which expresses splits such as "these images plus the first 60 of those".

    Raises:
        DatasetError: a pattern (or a list file) that matches no file.
    """
    out: Dict[str, None] = {}
    for pat in as_pattern_list(patterns):
        for path in _expand_one(pat, what):
            out.setdefault(path, None)
    return sorted(out, key=natural_key)


def _expand_one(pat: str, what: str) -> List[str]:
    if pat.startswith("@"):
        list_path = Path(pat[1:]).expanduser()
        if not list_path.is_file():
            raise DatasetError(f"{what} list file not found: {list_path} (from pattern {pat!r})")
        found: List[str] = []
        for line in list_path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            p = Path(line).expanduser()
            if not p.is_absolute():
                p = list_path.parent / p
            found.extend(_expand_one(str(p), what))
        return found
    expanded = os.path.expanduser(pat)
    matches = [m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
    if not matches:
        raise DatasetError(f"no {what} match the pattern {pat!r}")
    return [os.path.abspath(m) for m in matches]


def natural_key(path: str) -> Tuple:
    """Sort key that orders embedded numbers numerically (``mask2`` before ``mask10``)."""
    return tuple(int(t) if t.isdigit() else t for t in _DIGITS.split(path))


def pair_files(
    images: Sequence[str], targets: Sequence[str]
) -> Tuple[Dict[str, List[str]], List[str], List[str]]:
    """Pair images with their targets by stem.

    Args:
        images, targets: file paths (a path in both lists counts as an image only).

    Returns:
        ``(pairs, unmatched_images, unmatched_targets)``: ``pairs`` maps each matched image to
        its targets in natural order (``_mask2`` before ``_mask10``); images keep their order.

    Raises:
        DatasetError: two images share a stem (pairing by stem would be ambiguous).
    """
    by_stem: Dict[str, str] = {}
    for img in images:
        s = stem_of(img)
        if s in by_stem and by_stem[s] != img:
            raise DatasetError(
                f"two images share the stem {s!r}: {by_stem[s]} and {img}; targets are paired "
                "with images by file stem, so image stems must be unique"
            )
        by_stem[s] = img
    image_set = set(images)
    # Sorted stems + bisect: pairing stays fast on datasets with many thousands of images.
    stems_sorted = sorted(by_stem)
    owned: Dict[str, List[str]] = {}
    unmatched_targets: List[str] = []
    for tgt in targets:
        if tgt in image_set:
            continue
        ts = stem_of(tgt)
        owner = owner_stem(ts, stems_sorted)
        if owner is None:
            unmatched_targets.append(tgt)
        else:
            owned.setdefault(by_stem[owner], []).append(tgt)
    pairs = {img: sorted(owned[img], key=natural_key) for img in images if img in owned}
    unmatched_images = [img for img in images if img not in owned]
    return pairs, unmatched_images, unmatched_targets


def describe_unmatched(kind: str, files: Sequence[str], first: int = 3) -> str:
    """``"5 images have no target: a.jpg, b.jpg, c.jpg, ..."``-style message."""
    names = ", ".join(os.path.basename(f) for f in files[:first])
    more = ", ..." if len(files) > first else ""
    return f"{len(files)} {kind}: {names}{more}"
