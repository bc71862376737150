"""What every request of one server shares, and the token check."""
from __future__ import annotations

import base64
import binascii
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Optional, Tuple

from fastapi import HTTPException, Request

from .annotations import AnnotationStore
from .images import ImageStore, Photo
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
    _upload_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_upload(self, data: bytes, filename: str) -> Tuple[str, Photo]:
        """Keep an uploaded photo, keyed by its content: the same bytes get the same id and
        COCO image; different photos sent under one name get different names (``bear-2.jpg``)."""
        name, photo = self.images.decode_upload(data, filename)
        with self._upload_lock:
            taken = {self.coco_name(i) for i in self.images.upload_ids()
                     if not i.startswith(f"upload/{photo.key[:16]}/")}
            mine = [i for i in self.images.upload_ids() if i.startswith(f"upload/{photo.key[:16]}/")]
            unique = (self.coco_name(mine[-1]) if mine
                      else self.annotations.upload_name(photo.key, name, taken))
            return self.images.keep_upload(data, photo.key, unique), photo

    def coco_name(self, image_id: str) -> str:
        """The ``file_name`` an image has in the annotations file: its path in the folder, or an
        upload's name (its file name, made unique among other photos)."""
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
    ``x-nuclio-function-namespace: T`` (set ``CVAT_NUCLIO_FUNCTION_NAMESPACE``), ``?token=T``,
    or HTTP Basic auth with T as the password (the only way Label Studio authenticates to an ML
    backend; any user name)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if auth.lower().startswith("basic "):
        try:
            return base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
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
                                 "(…/#token=…) or send 'Authorization: Bearer TOKEN' "
                                 "(Label Studio: the token as its Basic auth password)",
                            headers={"WWW-Authenticate": "Bearer"})
