"""Where dextr keeps its per-user files: the one rule for every cache folder.

``user_dir(kind)`` is ``$DEXTR_HOME/<kind>`` when ``DEXTR_HOME`` is set, else ``<kind>`` inside
the platform's user cache folder as :mod:`platformdirs` defines it (Linux:
``$XDG_CACHE_HOME/dextr`` or ``~/.cache/dextr``; macOS: ``~/Library/Caches/dextr``; Windows:
``%LOCALAPPDATA%\\dextr\\Cache``). The model cache (``models``) and the dataset index cache
(``datasets``) both come from here.
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

#: Environment variable naming one folder for everything dextr keeps per user.
HOME_ENV = "DEXTR_HOME"
APP_NAME = "dextr"

#: The kinds of folders dextr keeps.
MODELS = "models"
DATASETS = "datasets"


def user_cache_root() -> Path:
    """``$DEXTR_HOME``, else the platform's per-user cache folder for dextr."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def user_dir(kind: str) -> Path:
    """The folder for ``kind`` (``"models"``, ``"datasets"``) under :func:`user_cache_root`."""
    return user_cache_root() / kind
