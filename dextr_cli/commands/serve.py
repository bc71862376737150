"""``dextr serve``: annotate photos in the browser (four clicks per object), an HTTP API and a CVAT
interactor, on one model."""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from dextr_lib.config import load_config
from dextr_lib.errors import DextrError

from .._console import console, err_console
from .._models import load_model, model_spec
from .._options import ConfigOpt, DeviceOpt, ModelOpt, PrecisionOpt, RuntimeOpt, settings, split_names


def serve(
    model: ModelOpt = None,
    images: Annotated[Optional[Path], typer.Option(
        "--images", "-i", exists=True, file_okay=False, help="Folder of photos to annotate "
        "(subfolders included). Without it, the page uploads photos one by one.",
        show_default=False)] = None,
    annotations: Annotated[Optional[Path], typer.Option(
        "--annotations", "-a", dir_okay=False, help="COCO instances JSON written after every "
        "accepted object; an existing file is continued (default: annotations.json).",
        show_default=False)] = None,
    classes: Annotated[Optional[str], typer.Option(
        "--classes", help="Class names offered on the page, comma-separated: person,dog,car.",
        show_default=False)] = None,
    host: Annotated[Optional[str], typer.Option(
        "--host", help="Address to listen on (default: 127.0.0.1, this machine only). Another "
        "address lets other machines in: use --token.", show_default=False)] = None,
    port: Annotated[Optional[int], typer.Option(
        "--port", min=1, max=65535, help="Port (default: 8000).", show_default=False)] = None,
    token: Annotated[Optional[str], typer.Option(
        "--token", envvar="DEXTR_TOKEN", help="Secret every API call must carry (the printed URL "
        "has it); needed when other machines can connect. Also $DEXTR_TOKEN.",
        show_default=False)] = None,
    threshold: Annotated[Optional[float], typer.Option(
        "--threshold", "-t", min=0.0, max=1.0, help="Mask threshold (default: the model's).",
        show_default=False)] = None,
    max_upload_mb: Annotated[Optional[float], typer.Option(
        "--max-upload-mb", min=0.1, help="Largest request accepted, in MB (default: 50).",
        show_default=False)] = None,
    allowed_hosts: Annotated[Optional[str], typer.Option(
        "--allowed-hosts", help="Host names the server answers besides localhost, comma-separated "
        "(* any; default: any when --host is not loopback). Others get 400: a guard against DNS "
        "rebinding.", show_default=False)] = None,
    device: DeviceOpt = None,
    precision: PrecisionOpt = None,
    runtime: RuntimeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Annotate photos in the browser: click four extreme points, get the mask, save COCO.

    Starts a local web server and prints the URL to open. Every accepted object is written at once to the annotations file (COCO instances JSON with RLE masks); restarting on the same file continues.

    The same server answers the HTTP API (documented at /docs) and CVAT as a DEXTR interactor (see docs/serve.md).

    Examples:

      dextr serve -m model.pt --images photos/ --classes person,dog

      dextr serve -m model.pt --annotations coco.json --port 8080
    """
    try:
        import uvicorn

        from dextr_lib.serving import create_app
    except ImportError as e:
        raise DextrError(f"dextr serve needs FastAPI and uvicorn ({e.name} is missing): "
                         "pip install 'dextr[serve]'") from None
    cfg = load_config(config)
    ss = settings(cfg.serve, model=model, device=device, precision=precision, runtime=runtime,
                  threshold=threshold, host=host, port=port, images=images, annotations=annotations,
                  classes=split_names(classes), max_upload_mb=max_upload_mb,
                  allowed_hosts=split_names(allowed_hosts))
    spec = model_spec(ss.model, "serve")
    host, port, folder = ss.host, ss.port, ss.images
    if folder is not None and not Path(folder).is_dir():
        raise DextrError(f"image folder not found: {folder}")
    _check_port_free(host, port)
    net = load_model(spec, cfg, map_location=ss.device, runtime=ss.runtime, precision=ss.precision)
    app = create_app(
        net, folder, ss.annotations, classes=ss.classes, precision=ss.precision, threshold=ss.threshold,
        token=token, max_upload_mb=ss.max_upload_mb, allowed_hosts=served_hosts(host, ss.allowed_hosts),
    )
    state = app.state.dextr
    store = state.annotations
    if store.existed:
        n_img = sum(1 for v in store.counts().values() if v)
        note = f"continuing: {len(store.coco)} objects on {n_img} images"
    else:
        note = "new file, written at the first accepted object"
    shown = "localhost" if _is_loopback(host) else (socket.gethostname() if host in ("0.0.0.0", "::") else host)
    # In the fragment (#), which browsers never send: the token stays out of access logs.
    url = f"http://{shown}:{port}/" + (f"#token={token}" if token else "")
    console.print(f"Model: {net.arch} ({net.preprocess.name} profile) on {net.device} with {net.runtime}, "
                  f"{state.predictor.precision}, threshold {state.predictor.threshold:g}", highlight=False)
    console.print(f"Images: {folder if folder is not None else 'uploaded in the page'}", highlight=False)
    console.print(f"Annotations: {store.path} ({note})", highlight=False)
    if not _is_loopback(host) and not token:
        err_console.print(f"[bold yellow]Warning:[/] listening on {host} without --token: anyone "
                          f"who can reach port {port} can run the model and change {store.path}.",
                          highlight=False)
    console.print(f"Open [bold]{url}[/] (API docs: {url.split('#')[0]}docs; Ctrl-C stops)",
                  highlight=False)
    log_config = dict(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"] = {**log_config["loggers"],
                             "dextr": {"handlers": ["default"], "level": "INFO", "propagate": False}}
    log_config["filters"] = {"no_token": {"()": "dextr_lib.serving.app.TokenRedactor"}}
    log_config["handlers"] = {**log_config["handlers"], "access": {
        **log_config["handlers"]["access"], "filters": ["no_token"]}}
    try:
        uvicorn.run(app, host=host, port=port, log_config=log_config, log_level="info")
    finally:
        state.close()


def served_hosts(host: str, allowed: list) -> list:
    """The Host names the app answers: those asked for (and the one listened on), or any when
    listening beyond this machine without a list."""
    if allowed:
        return [*allowed, host]
    return [] if _is_loopback(host) else ["*"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise DextrError(f"cannot listen on {host}:{port}: {e.strerror or e}; pass another "
                             "--port (or --host)") from None
