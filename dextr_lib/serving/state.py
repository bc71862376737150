"""What every request of one server shares, and the token check."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional

from fastapi import HTTPException, Request

from .annotations import AnnotationStore
from .images import ImageStore
from .predictor import Predictor


@dataclass
class ServerState:
    """The model, the photos and the annotations file of one server."""

    predictor: Predictor
    images: ImageStore
    annotations: AnnotationStore
    token: Optional[str] = None
    max_upload_mb: float = 50.0
    cvat_function: str = "dextr"

    def coco_name(self, image_id: str) -> str:
        """The ``file_name`` an image has in the annotations file: its path in the folder, or an
        upload's own file name."""
        if self.images.is_upload(image_id):
            return PurePosixPath(image_id).name
        return image_id

    def image_id_for(self, file_name: str) -> str:
        """The server's id of an annotated image (the latest upload of that name, for uploads)."""
        if self.images.root is None:
            for i in reversed(self.images.upload_ids()):
                if PurePosixPath(i).name == file_name:
                    return i
        return file_name

    def close(self) -> None:
        """Release the annotations file (idempotent)."""
        self.annotations.close()


def get_state(request: Request) -> ServerState:
    return request.app.state.dextr


def token_of(request: Request) -> Optional[str]:
    """The token a request carries: ``Authorization: Bearer T``, ``X-Dextr-Token: T``, CVAT's
    ``x-nuclio-function-namespace: T`` (set ``CVAT_NUCLIO_FUNCTION_NAMESPACE``) or ``?token=T``."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for header in ("x-dextr-token", "x-nuclio-function-namespace"):
        if header in request.headers:
            return request.headers[header]
    return request.query_params.get("token")


def require_token(request: Request) -> None:
    """Dependency of every API route: with a server token, the request must carry it."""
    expected = get_state(request).token
    if not expected:
        return
    given = token_of(request)
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "this server needs its token: open the URL it printed "
                                 "(…/?token=…) or send 'Authorization: Bearer TOKEN'",
                            headers={"WWW-Authenticate": "Bearer"})
