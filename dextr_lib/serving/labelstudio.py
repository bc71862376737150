"""Label Studio ML backend: ``dextr serve`` answers Label Studio's machine-learning API under
``/labelstudio/`` (the URL users enter in a project's Model settings is ``http://HOST:PORT/labelstudio``).

Label Studio (``label_studio/ml/api_connector.py``) calls ``GET health``, ``POST setup`` (the
project's labeling config, the Label Studio ``hostname`` and the project owner's
``access_token``), ``POST predict`` and ``POST webhook``. With interactive pre-annotations on,
each smart keypoint click posts ``predict`` with ``params.context.result``: the clicks so far as
``keypointlabels`` results, ``x``/``y`` in percent of the image, ``is_positive`` false for
Alt-clicks. dextr answers a ``brushlabels`` result (Label Studio's brush RLE,
:mod:`dextr_lib.formats.brush`) once four positive points are placed; further points are
corrections when the model takes them. Without context (a task opened, "Retrieve
predictions"), tasks whose data holds keypoint results get masks, others an empty result.

Images are read the way Label Studio serves them: a relative URL (``/data/upload/...``,
``/data/local-files/?d=...``) is fetched from the host that set the project up, with its token;
a local file inside ``--images`` is read from there instead. Absolute URLs are fetched only from
that host.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Annotated

from ..errors import DextrError
from ..formats.brush import mask_to_brush
from ..version import __version__
from .cvat import extreme_and_corrections
from .images import Photo, _ByteBoundedCache
from .schemas import error_responses
from .state import ServerState, get_state

log = logging.getLogger("dextr.serve")
router = APIRouter(prefix="/labelstudio", tags=["labelstudio"])

#: Seconds to wait for Label Studio when fetching a task's image.
FETCH_TIMEOUT_S = 30.0
#: What an unset project falls back to (as Label Studio's own ML backends read them).
ENV_URL = "LABEL_STUDIO_URL"
ENV_TOKEN = "LABEL_STUDIO_API_KEY"
#: Decoded task images kept by URL, so each click of one object does not download it again.
PHOTO_CACHE_BYTES = 256 * 2**20

Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]


# -- request bodies -----------------------------------------------------------------------------
class RegionValue(BaseModel):
    """A region's ``value``: image regions place ``x``/``y`` in percent of the image."""

    model_config = ConfigDict(extra="allow")

    x: Optional[Percent] = Field(None, description="Column, percent of the image width.")
    y: Optional[Percent] = Field(None, description="Row, percent of the image height.")
    keypointlabels: List[str] = Field(default_factory=list)


class ContextItem(BaseModel):
    """One region of the annotation in progress (smart keypoints are ``keypointlabels``)."""

    model_config = ConfigDict(extra="allow")

    type: str = ""
    from_name: str = ""
    to_name: str = ""
    original_width: Optional[Annotated[int, Field(ge=1)]] = None
    original_height: Optional[Annotated[int, Field(ge=1)]] = None
    is_positive: bool = True
    value: RegionValue = Field(default_factory=RegionValue)


class Context(BaseModel):
    model_config = ConfigDict(extra="allow")

    result: List[ContextItem] = Field(default_factory=list)


class PredictParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    context: Optional[Context] = None


class PredictBody(BaseModel):
    """What Label Studio's ``MLApi.make_predictions`` posts."""

    model_config = ConfigDict(extra="allow")

    tasks: List[Dict[str, Any]] = Field(default_factory=list)
    model_version: Optional[str] = None
    project: Optional[str] = Field(None, description="'<project id>.<created timestamp>'.")
    label_config: str = ""
    params: PredictParams = Field(default_factory=PredictParams)


class SetupBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    project: str = ""
    schema_: str = Field("", alias="schema", description="The project's labeling config.")
    hostname: Optional[str] = Field(None, description="Where Label Studio serves the images.")
    access_token: Optional[str] = Field(None, description="Token for Label Studio's API.")


class Health(BaseModel):
    status: str = Field(..., description="'UP', as Label Studio expects.")
    model_class: str


class SetupOut(BaseModel):
    model_version: str


class PredictOut(BaseModel):
    results: List[Optional[Dict[str, Any]]] = Field(
        ..., description="One prediction per task: {result: [brushlabels regions], score, "
        "model_version}; interactively, null until four positive keypoints are placed (Label "
        "Studio then keeps the points and shows nothing).")


# -- what setup records -------------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    """Where one Label Studio project lives: its base URL and an API token."""

    hostname: Optional[str]
    access_token: Optional[str]


class Links:
    """The Label Studio projects that called ``setup`` (by project id); an unknown project uses
    ``$LABEL_STUDIO_URL`` and ``$LABEL_STUDIO_API_KEY``. Also what fetching their images keeps:
    the images by URL (least recently used dropped past :data:`PHOTO_CACHE_BYTES`) and the
    access tokens personal access tokens were exchanged for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_project: Dict[str, Link] = {}
        self._photos = _ByteBoundedCache(PHOTO_CACHE_BYTES)  # (URL, token) -> Photo
        self._access: Dict[str, Tuple[str, float]] = {}  # PAT -> (access token, expiry)

    def photo(self, key: Tuple[str, Optional[str]]) -> Optional[Photo]:
        with self._lock:
            return self._photos.get(repr(key))  # type: ignore[return-value]

    def keep_photo(self, key: Tuple[str, Optional[str]], photo: Photo) -> None:
        with self._lock:
            self._photos.put(repr(key), photo, photo.rgb.nbytes)

    def access_token(self, pat: str) -> Optional[str]:
        with self._lock:
            token, expiry = self._access.get(pat, ("", 0.0))
        return token if time.time() < expiry else None

    def keep_access_token(self, pat: str, token: str, expiry: float) -> None:
        with self._lock:
            self._access[pat] = (token, expiry)

    def set(self, project: Optional[str], link: Link) -> None:
        with self._lock:
            self._by_project[_project_id(project)] = link

    def get(self, project: Optional[str]) -> Link:
        with self._lock:
            link = self._by_project.get(_project_id(project))
        return link or Link(os.environ.get(ENV_URL) or None, os.environ.get(ENV_TOKEN) or None)


def _project_id(project: Optional[str]) -> str:
    return str(project or "").split(".", 1)[0]


def get_links(request: Request) -> Links:
    return request.app.state.labelstudio


def model_version(state: ServerState) -> str:
    m = state.predictor.model
    return f"dextr-{__version__}-{m.arch}"


# -- routes -------------------------------------------------------------------------------------
@router.get("/health", response_model=Health, responses=error_responses(400, 401),
            summary="Label Studio: is the backend up")
@router.get("/", response_model=Health, include_in_schema=False)
def health() -> Health:
    return Health(status="UP", model_class="DextrModel")


@router.post("/setup", response_model=SetupOut, responses=error_responses(400, 401, 413, 422),
             summary="Label Studio: connect a project (records its host and token)")
def setup(body: SetupBody, state: ServerState = Depends(get_state),
          links: Links = Depends(get_links)) -> SetupOut:
    hostname = (body.hostname or "").rstrip("/") or None
    if hostname is not None and urllib.parse.urlsplit(hostname).scheme not in ("http", "https"):
        raise HTTPException(400, f"hostname must be an http(s) URL, got {body.hostname!r}")
    links.set(body.project, Link(hostname, body.access_token or None))
    return SetupOut(model_version=model_version(state))


@router.post("/webhook", responses=error_responses(400, 401, 413, 422), summary="Label Studio: events (annotations, training): accepted, unused")
def webhook(body: Dict[str, Any]) -> Dict[str, str]:
    # DEXTR does not learn from annotations here; Label Studio only needs a 2xx.
    return {"status": "ok", "action": str(body.get("action", ""))}


@router.post("/predict", response_model=PredictOut, responses=error_responses(400, 401, 413, 422),
             summary="Label Studio: masks for smart keypoints (interactive) or for tasks")
def predict(body: PredictBody, state: ServerState = Depends(get_state),
            links: Links = Depends(get_links)) -> PredictOut:
    config = LabelingConfig.parse(body.label_config)
    link = links.get(body.project)
    version = model_version(state)
    context = body.params.context
    if context is not None and context.result:
        if not body.tasks:
            raise HTTPException(400, "predict with a context needs the task")
        points = _keypoints(context.result)
        if sum(p.is_positive for p in points) < 4:
            return PredictOut(results=[None])
        region = _region(body.tasks[0], points, config, link, links, state)
        return PredictOut(results=[_prediction([region], version)])
    results = []
    for task in body.tasks:
        try:
            regions = _from_task_data(task, config, link, links, state)
        except (DextrError, HTTPException) as e:
            # Opening a task must never fail: its prediction is left empty, the cause logged.
            log.warning("Label Studio task %s: no mask: %s", task.get("id"), _reason(e))
            regions = []
        results.append(_prediction(regions, version))
    return PredictOut(results=results)


def _reason(e: Exception) -> str:
    return str(e.detail) if isinstance(e, HTTPException) else str(e)


def _prediction(regions: List[Dict[str, Any]], version: str) -> Dict[str, Any]:
    score = float(np.mean([r["score"] for r in regions])) if regions else 0.0
    return {"result": regions, "score": score, "model_version": version}


# -- the labeling config ------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelingConfig:
    """The parts of a labeling config dextr uses: each ``Image`` (name -> its ``$field``) and the
    ``BrushLabels`` drawn on it (image name -> the tag's name and its labels)."""

    images: Dict[str, str]
    brushes: Dict[str, Tuple[str, Tuple[str, ...]]]

    @classmethod
    def parse(cls, xml: str) -> "LabelingConfig":
        try:
            root = ET.fromstring(xml) if xml.strip() else ET.Element("View")
        except ET.ParseError as e:
            raise HTTPException(400, f"the labeling config is not valid XML: {e}") from None
        images, brushes = {}, {}
        for tag in root.iter():
            name = tag.get("name")
            if tag.tag == "Image" and name:
                images[name] = (tag.get("value") or "").lstrip("$")
            elif tag.tag == "BrushLabels" and name and tag.get("toName"):
                labels = tuple(t.get("value", "") for t in tag.iter("Label"))
                brushes.setdefault(tag.get("toName"), (name, labels))
        return cls(images, brushes)

    def target(self, to_name: str) -> Tuple[str, str, str]:
        """The image's data field, the BrushLabels tag's name and the image's name for keypoints
        on ``to_name`` (empty: the config's only image)."""
        if not to_name and len(self.images) == 1:
            to_name = next(iter(self.images))
        if to_name not in self.images:
            raise HTTPException(400, f"the labeling config has no <Image name=\"{to_name}\"> "
                                     f"(images: {', '.join(self.images) or 'none'})")
        if to_name not in self.brushes:
            raise HTTPException(400, f"the labeling config has no <BrushLabels toName="
                                     f"\"{to_name}\">: dextr answers with brush masks; add one with "
                                     "the same labels as the KeyPointLabels")
        return self.images[to_name], self.brushes[to_name][0], to_name


# -- points to masks ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Keypoint:
    """A smart keypoint: ``x``/``y`` in percent of the image, its label and image."""

    x: float
    y: float
    is_positive: bool
    label: Optional[str]
    to_name: str


def _keypoints(items: List[ContextItem]) -> List[Keypoint]:
    """The keypoints among the regions (others, e.g. a brush drawn earlier, are ignored).

    Raises:
        HTTPException: 400 for a keypoint without ``x``/``y`` (the schema refuses values
            outside 0-100 with 422).
    """
    points = []
    for it in items:
        if it.type.lower() != "keypointlabels":
            continue
        v = it.value
        if v.x is None or v.y is None:
            raise HTTPException(400, "a keypoint without value.x and value.y (its position in "
                                     "percent of the image)")
        points.append(Keypoint(v.x, v.y, it.is_positive,
                               v.keypointlabels[0] if v.keypointlabels else None, it.to_name))
    return points


def _from_task_data(task: Dict[str, Any], config: LabelingConfig, link: Link, links: Links,
                    state: ServerState) -> List[Dict[str, Any]]:
    """Masks for keypoints stored in a task's data: every data value that is a list of
    ``keypointlabels`` results is one object (with at least four positive points)."""
    regions = []
    for value in _task_data(task).values():
        if not isinstance(value, list) or not value or not all(
                isinstance(v, dict) and str(v.get("type", "")).lower() == "keypointlabels"
                for v in value):
            continue
        try:
            points = _keypoints([ContextItem.model_validate(v) for v in value])
        except ValidationError as e:
            raise HTTPException(400, f"keypoints in the task's data are malformed "
                                     f"({e.error_count()} errors: {e.errors()[0]['msg']})") from None
        if sum(p.is_positive for p in points) >= 4:
            regions.append(_region(task, points, config, link, links, state))
    return regions


def _task_data(task: Dict[str, Any]) -> Dict[str, Any]:
    data = task.get("data") or {}
    if not isinstance(data, dict):
        raise HTTPException(400, f"the task's data is not an object of fields (got {type(data).__name__})")
    return data


def _region(task: Dict[str, Any], points: List[Keypoint], config: LabelingConfig,
            link: Link, links: Links, state: ServerState) -> Dict[str, Any]:
    """One ``brushlabels`` region from keypoints (at least four positive) on the task's image."""
    field, brush_name, to_name = config.target(points[0].to_name)
    url = _task_data(task).get(field)
    if not isinstance(url, str) or not url:
        raise HTTPException(400, f"the task has no image URL in data.{field}")
    photo = fetch_photo(url, link, links, state)
    h, w = photo.height, photo.width
    xy = np.asarray([[p.x * w / 100.0, p.y * h / 100.0] for p in points])
    positive = np.asarray([p.is_positive for p in points])
    extreme_yx, more_yx, negative_yx = split_points(xy[positive], xy[~positive])
    mask, score = _run(state, photo, extreme_yx, more_yx, negative_yx)
    label = next((p.label for p in points if p.label), None)
    if label is None:  # a keypoint without a label: the brush's first
        label = next(iter(config.brushes[to_name][1]), "object")
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": brush_name,
        "to_name": to_name,
        "type": "brushlabels",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_brush(mask), "brushlabels": [label]},
        "score": score,
        "readonly": False,
    }


def split_points(positive_xy: np.ndarray, negative_xy: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label Studio clicks -> DEXTR's inputs, all ``[y, x]`` pixel indices, by CVAT's rule
    (:func:`~dextr_lib.serving.cvat.extreme_and_corrections`).

    Args:
        positive_xy: ``(P, 2)`` positive clicks ``[x, y]`` in continuous image coordinates
            (pixel ``i`` spans ``[i, i + 1)``), ``P >= 4``.
        negative_xy: ``(N, 2)`` negative clicks, the same.

    Returns:
        ``(4, 2)`` extreme points (the left-most, right-most, top and bottom positive clicks,
        four distinct ones), ``(P - 4, 2)`` the other positive clicks, ``(N, 2)`` the negative
        clicks.
    """
    extreme, more = extreme_and_corrections(positive_xy)
    neg = np.asarray(negative_xy, np.float64).reshape(-1, 2) - 0.5
    return extreme, more, neg[:, ::-1].copy()


def _run(state: ServerState, photo: Photo, extreme_yx: np.ndarray, positive_yx: np.ndarray,
         negative_yx: np.ndarray) -> Tuple[np.ndarray, float]:
    """The mask and score; positive clicks beyond four and negative clicks go to the model as
    corrections (one it cannot use is the library's CorrectionError, answered 400)."""
    pred = state.predictor.predict(photo.key, photo.rgb, extreme_yx, positive=positive_yx,
                                   negative=negative_yx)
    return pred.mask, pred.score


# -- images -------------------------------------------------------------------------------------
def fetch_photo(url: str, link: Link, links: Links, state: ServerState) -> Photo:
    """The task's image: from ``--images`` when Label Studio serves a file of that folder, else
    downloaded from the Label Studio host that set the project up (once: kept by URL).

    Raises:
        HTTPException: 400 for an unreachable image, a host other than Label Studio's, no
            known Label Studio host for a relative URL, or every token refused.
        LimitError: an image over the pixel limit.
    """
    local = _local_id(url, state)
    if local is not None:
        return state.images.photo(local)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        if link.hostname is None or _origin(url) != _origin(link.hostname):
            raise HTTPException(400, f"the task's image {url} is not on the Label Studio host that "
                                     "set this project up; dextr fetches images only from there")
        full = url
    elif parts.scheme or parts.netloc or not url.startswith("/"):
        raise HTTPException(400, f"cannot read the task's image {url!r}: expected a Label Studio "
                                 "URL (/data/upload/..., /data/local-files/?d=...)")
    else:
        if link.hostname is None:
            raise HTTPException(400, "no Label Studio host known to fetch the task's image from: "
                                     "connect the model again in the project's Model settings "
                                     f"(or set ${ENV_URL} and ${ENV_TOKEN})")
        full = link.hostname + url
    key = (full, link.access_token)
    photo = links.photo(key)
    if photo is None:
        data = _download(full, link, links, state.max_upload_mb)
        photo = state.images.photo_from_bytes(data, f"the task's image {url}")
        links.keep_photo(key, photo)
    return photo


def _origin(url: str) -> Tuple[str, str]:
    p = urllib.parse.urlsplit(url)
    return p.scheme.lower(), p.netloc.lower()


def _local_id(url: str, state: ServerState) -> Optional[str]:
    """The ``--images`` id of a Label Studio local-files URL, when the file is in that folder
    (the longest tail of its path that names one of the folder's photos)."""
    if state.images.root is None:
        return None
    parts = urllib.parse.urlsplit(url)
    if not parts.path.endswith("/data/local-files/"):
        return None
    d = urllib.parse.parse_qs(parts.query).get("d", [""])[0]
    path = PurePosixPath(d)
    pieces = [p for p in path.parts if p not in ("/", "")]
    root = state.images.root.as_posix().strip("/").split("/")
    if pieces[:len(root)] == root:  # the document root is / : an absolute path
        pieces = pieces[len(root):]
    for start in range(len(pieces)):
        candidate = "/".join(pieces[start:])
        try:
            state.images.path_of(candidate)
            return candidate
        except HTTPException:
            continue
    return None


class _Refused(Exception):
    """Label Studio refused a token (401 or 403)."""


def jwt_claims(token: str) -> Optional[Dict[str, Any]]:
    """The claims of a JWT (unverified: Label Studio checks it), None for a legacy token."""
    pieces = token.split(".")
    if len(pieces) != 3:
        return None
    try:
        header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
                          for p in pieces[:2])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or "alg" not in header or not isinstance(claims, dict):
        return None
    return claims


def _authorization(token: str, hostname: str, links: Links) -> str:
    """The ``Authorization`` header for a token: a legacy token as ``Token T``; a personal
    access token (a JWT refresh token, Label Studio >= 1.20) exchanged at
    ``/api/token/refresh/`` for an access token sent as ``Bearer``; an access token as is."""
    claims = jwt_claims(token)
    if claims is None:
        return f"Token {token}"
    if claims.get("token_type") != "refresh":
        return f"Bearer {token}"
    access = links.access_token(token)
    if access is None:
        body = json.dumps({"refresh": token}).encode()
        answer = _get(f"{hostname}/api/token/refresh/", {"Content-Type": "application/json"},
                      limit=2**16, data=body)
        try:
            access = str(json.loads(answer)["access"])
        except (ValueError, KeyError, TypeError):
            raise HTTPException(400, "Label Studio's /api/token/refresh/ answered no access "
                                     "token") from None
        exp = (jwt_claims(access) or {}).get("exp")
        # Renewed a minute early; an access token without exp is used for five minutes.
        expiry = float(exp) - 60 if isinstance(exp, (int, float)) else time.time() + 300
        links.keep_access_token(token, access, expiry)
    return f"Bearer {access}"


def _download(url: str, link: Link, links: Links, max_mb: float) -> bytes:
    """GET ``url`` with Label Studio's token (setup's, then ``$LABEL_STUDIO_API_KEY`` if setup's
    is refused), at most ``max_mb`` MB, within the timeout."""
    tokens = [t for t in dict.fromkeys([link.access_token, os.environ.get(ENV_TOKEN)]) if t]
    limit = int(max_mb * 2**20)
    hostname = link.hostname or "://".join(_origin(url))
    for token in tokens or [None]:
        try:
            headers = {} if token is None else {
                "Authorization": _authorization(token, hostname, links)}
            data = _get(url, headers, limit=limit)
            break
        except _Refused:
            continue
    else:
        raise HTTPException(400, f"Label Studio refused the token for the task's image {url}: "
                                 "Label Studio 1.20 and later refuses the legacy token it sends "
                                 "unless the organization allows legacy tokens (Organization -> "
                                 "API Tokens Settings); or start dextr with "
                                 f"${ENV_TOKEN} set to a Personal Access Token")
    if len(data) > limit:
        raise HTTPException(400, f"the task's image {url} is larger than this server accepts "
                                 f"({max_mb:g} MB, --max-upload-mb)")
    return data


def _get(url: str, headers: Dict[str, str], *, limit: int, data: Optional[bytes] = None
         ) -> bytes:
    """One request to Label Studio (POST when ``data``): at most ``limit + 1`` bytes read.

    Raises:
        _Refused: 401 or 403.
        HTTPException: 400 for any other failure.
    """
    req = urllib.request.Request(url, data=data, headers={
        "User-Agent": f"dextr/{__version__}", **headers})
    try:
        with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT_S) as r:
            return r.read(limit + 1)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise _Refused() from None
        raise HTTPException(400, f"Label Studio answered {e.code} for {url}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise HTTPException(400, f"cannot fetch {url}: {reason}") from None
