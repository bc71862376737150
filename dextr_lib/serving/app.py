"""The ``dextr serve`` application: ``create_app(model, images_dir, annotations)`` builds it; any
ASGI server runs it (the CLI uses uvicorn)."""
from __future__ import annotations

import ipaddress
import logging
import os
import re
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional, Sequence, Union

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ..errors import DextrError
from ..version import __version__
from . import api, cvat, labelstudio
from .annotations import AnnotationStore
from .images import ImageStore
from .predictor import Predictor
from .schemas import ErrorOut, Health, error_responses
from .state import ServerState, require_token

PathLike = Union[str, os.PathLike]
STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("dextr.serve")

#: Default bounds of what the server accepts.
DEFAULT_MAX_UPLOAD_MB = 50
DEFAULT_CACHE_MB = 1024  # decoded photos kept in memory


def create_app(
    model,
    images_dir: Optional[PathLike] = None,
    annotations: PathLike = "annotations.json",
    *,
    classes: Sequence[str] = (),
    precision: str = "fp32",
    threshold: Optional[float] = None,
    token: Optional[str] = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    cache_mb: float = DEFAULT_CACHE_MB,
    cvat_function: str = "dextr",
    allowed_hosts: Sequence[str] = (),
) -> FastAPI:
    """Build the annotation server for one model.

    Args:
        model: a :class:`~dextr_lib.model.DextrModel` (already on its device).
        images_dir: the folder whose photos are annotated (None: photos are uploaded one by one).
        annotations: the COCO instances file; an existing one is continued. It stays locked
            (``FILE.lock``) for this server until the app shuts down (:func:`close_app`).
        classes: category names offered on the page (created in the file, in this order).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (GPU), as in ``predict``; the app
            reports the precision it resolved to.
        threshold: mask threshold (default: the model's).
        token: when set, every ``/api`` request must carry it (see :func:`state.token_of`).
        max_upload_mb: largest request body accepted (413 above).
        (Images over the process's pixel limit, :mod:`dextr_lib.utils.limits`, get 400.)
        cache_mb: memory for decoded photos (least recently used ones are dropped).
        cvat_function: the function name CVAT lists.
        allowed_hosts: ``Host`` names answered besides the loopback ones (``localhost``,
            ``127.0.0.1``, ``::1``); ``*``: any. Other names get 400, so that a web page cannot
            reach this server through a DNS name rebound to 127.0.0.1.

    Raises:
        DatasetError: the annotations file is unreadable, not COCO, or locked by another server.
    """
    if images_dir is not None and not Path(images_dir).is_dir():
        raise DextrError(f"image folder not found: {images_dir}")
    state = ServerState(
        predictor=Predictor(model, precision=precision, threshold=threshold),
        images=ImageStore(Path(images_dir) if images_dir is not None else None,
                          cache_bytes=int(cache_mb * 2**20)),
        annotations=AnnotationStore(Path(annotations), classes=classes),
        token=token or None,
        max_upload_mb=float(max_upload_mb),
        cvat_function=cvat_function,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()

    app = FastAPI(
        title="dextr serve",
        version=__version__,
        description="DEXTR (Deep Extreme Cut): object masks from four extreme-point clicks. The "
        "page at / annotates photos; /api predicts and edits the COCO annotations file; "
        "/api/functions is the CVAT (nuclio) interactor interface.",
        lifespan=lifespan,
    )
    app.state.dextr = state
    app.add_middleware(BodyLimit, max_mb=state.max_upload_mb)
    app.add_middleware(HostCheck, allowed=allowed_hosts)
    _add_error_handlers(app)

    @app.get("/health", response_model=Health, tags=["server"], responses=error_responses(400))
    def health() -> Health:
        return Health(status="ok")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(api.router, dependencies=[Depends(require_token)])
    app.include_router(cvat.router, dependencies=[Depends(require_token)])
    app.state.labelstudio = labelstudio.Links()
    app.include_router(labelstudio.router, dependencies=[Depends(require_token)])
    return app


def close_app(app: FastAPI) -> None:
    """Release what :func:`create_app` holds (the annotations file's lock) without running the
    app's shutdown (for apps used without a server)."""
    app.state.dextr.close()


class TokenRedactor(logging.Filter):
    """A logging filter for the access log: ``token=SECRET`` in a logged URL becomes ``token=***``
    (API clients may still send the token as a query parameter)."""

    _TOKEN = re.compile(r"(?i)((?:^|[?&])token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._TOKEN.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse(ErrorOut(detail=detail).model_dump(), status_code=status)


def _is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The name of a ``Host`` header, without its port: ``[::1]:8000`` -> ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheck:
    """ASGI middleware: requests whose ``Host`` is neither a loopback name nor one of
    ``allowed`` get 400 (DNS rebinding: a page on evil.example whose name now points at
    127.0.0.1 sends ``Host: evil.example``)."""

    def __init__(self, app, allowed: Sequence[str] = ()):
        self.app = app
        self.any = "*" in allowed
        self.allowed = {host_name(h) for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.any:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            name = host_name(host)
            if not (_is_loopback_name(name) or name in self.allowed):
                response = _error(400, f"this server answers requests for localhost only, not "
                                       f"for Host {host!r} (a guard against DNS rebinding); to "
                                       "open it by that name, start it with --allowed-hosts NAME")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: request bodies over ``max_mb`` MB get 413 before they are read whole
    (by their ``Content-Length``, or while a chunked body arrives)."""

    def __init__(self, app, max_mb: float):
        self.app = app
        self.max_mb = max_mb
        self.max_bytes = int(max_mb * 2**20)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.max_bytes <= 0:
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large(send)
        seen = 0
        refused = False

        async def limited():
            # Past the limit: answer 413 now and tell the app the client left, so that the
            # body parser's own error (400 "error parsing the body") is never sent.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    await self._too_large(send)
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message):
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited, unless_refused)
        except Exception:
            if not refused:
                raise

    async def _too_large(self, send):
        response = _error(413, f"the request is larger than this server accepts "
                               f"({self.max_mb:g} MB, --max-upload-mb)")
        await response({"type": "http"}, None, send)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DextrError)
    async def _dextr_error(request: Request, exc: DextrError):
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error(422, validation_message(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, f"the server failed: {type(exc).__name__}: {exc}")


def validation_message(exc: RequestValidationError) -> str:
    """One line from FastAPI's validation errors: ``where: what`` for each."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            msg = "the body is not valid JSON"
        elif err.get("type") == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") == r"\S":
            msg = "the class name is empty"  # schemas.CLASS_NAME's pattern
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"
