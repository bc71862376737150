"""``dextr download``: fetch published models into the model cache."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlsplit

import typer
from rich.table import Table
from typing_extensions import Annotated

from dextr_lib.config import load_config
from dextr_lib.weights import zoo
from dextr_lib.weights.download import check_url, download_file, entry_lock

from .._console import console, esc, warn
from .._models import download_progress
from .._options import ConfigOpt, settings


def _size(n: Optional[int]) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "?"


def _list(cache_dir: Optional[str]) -> None:
    table = Table(title=f"Published DEXTR models (cache: {esc(zoo.models_dir(cache_dir))})",
                  caption="~: estimated from the architecture (the exact size shows once cached)")
    for col in ("name", "arch", "size", "reported accuracy", "cached"):
        table.add_column(col)
    for name in zoo.list_pretrained():
        entry = zoo.get_pretrained(name)
        path = zoo.cached_path(entry, cache_dir)
        if path.is_file() or entry.size is not None:
            size = _size(path.stat().st_size if path.is_file() else entry.size)
        else:
            size = f"~{entry.approx_size / 1e6:.0f} MB" if entry.approx_size else "?"
        table.add_row(name, entry.arch, size, entry.accuracy, "[green]yes[/]" if path.is_file() else "no")
    console.print(table)


def download(
    names: Annotated[Optional[List[str]], typer.Argument(
        help="Registered model names (see --list).", show_default=False)] = None,
    list_models: Annotated[bool, typer.Option(
        "--list", help="List the published models and whether they are cached.")] = False,
    url: Annotated[Optional[str], typer.Option(
        "--url", help="Download this URL instead (a mirror or a private model).", show_default=False)] = None,
    sha256: Annotated[Optional[str], typer.Option(
        "--sha256", help="Expected SHA-256 of the --url file.", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option(
        "--name", help="File name in the cache for --url [default: the URL's].", show_default=False)] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        "--cache-dir", help="Model cache (default: \\[paths] models, $DEXTR_HOME/models, or the user cache).",
        file_okay=False, show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even when cached.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Download published models into the model cache.

    Examples:
        dextr download --list
        dextr download pascalvoc-resunet101
        dextr download pascal-sbd coco --cache-dir ./models
        dextr download --url https://example.org/my-dextr.pt --sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    """
    cfg = load_config(config)
    cache = settings(cfg.paths, models=str(cache_dir) if cache_dir else None).models
    if sum([bool(names), list_models, url is not None]) != 1:
        raise typer.BadParameter("give model NAMEs, --list, or --url (exactly one of them)")
    if (sha256 or name) and url is None:
        raise typer.BadParameter("--sha256 and --name go with --url")
    if list_models:
        _list(cache)
        return
    if url is not None:
        filename = name or os.path.basename(urlsplit(url).path)
        if not filename or "/" in filename or filename in (".", ".."):
            raise typer.BadParameter(f"cannot take a file name from {url!r}; pass --name", param_hint="--name")
        check_url(url)
        dst = zoo.models_dir(cache) / filename
        with entry_lock(dst):  # a second `dextr download` of the same file waits, then reuses it
            if dst.is_file() and not force:
                console.print(f"Already cached: {esc(dst)} (use --force to download again)", highlight=False)
                return
            with download_progress(filename) as update:
                digest = download_file(url, dst, sha256=sha256, on_progress=update)
            zoo.record_download(dst, url, digest, dst.stat().st_size)
        console.print(f"Saved {esc(dst)}\nsha256 {digest}"
                      + ("" if sha256 else " (not verified: pass --sha256 to check it)"), highlight=False)
        return
    for n in names:
        zoo.get_pretrained(n)  # unknown names fail before any download
    for n in names:
        entry = zoo.get_pretrained(n)
        if zoo.is_cached(entry, cache) and not force:
            console.print(f"{n}: already cached at {esc(zoo.cached_path(entry, cache))}", highlight=False)
            continue
        warnings: List[str] = []
        with download_progress(n) as update:
            path = zoo.fetch_pretrained(n, cache_dir=cache, force=force, mirror=cfg.models.mirror,
                                        on_progress=update, on_warning=warnings.append)
        for w in warnings:
            warn(w)
        console.print(f"{n}: saved {esc(path)}", highlight=False)
