"""CVAT interactor compatibility: ``dextr serve`` answers CVAT's lambda manager as a nuclio
dashboard with one function, a DEXTR interactor.

CVAT (``cvat/apps/lambda_manager/views.py``) lists functions with ``GET /api/functions``, reads
one with ``GET /api/functions/NAME``, and invokes it with ``POST /api/function_invocations``
(header ``x-nuclio-function-name``; ``CVAT_NUCLIO_INVOKE_METHOD=dashboard``) or ``POST /`` on the
function's port (``direct``). The invocation body holds the frame as base64 (``image``),
``pos_points``/``neg_points`` as ``[x, y]`` in CVAT's canvas coordinates (pixel ``i`` spans
``[i, i + 1)``), ``obj_bbox`` and an optional ``threshold``. The answer is what CVAT's UI reads
from an interactor (version 2): ``mask`` (rows of 0/255 over ``bounds``), ``bounds``
``[left, top, right, bottom]`` (inclusive pixels) and ``points``, the outline polygon.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Annotated

from ..version import __version__
from .api import mask_box, polygons
from .schemas import BASE64, PointXY, error_responses
from .state import ServerState, get_state

router = APIRouter(tags=["cvat"])

HELP = ("Click the object's left-most, right-most, top and bottom points; more positive points "
        "inside correct the mask (the outermost four are the extreme points){negatives}. "
        "Served by dextr serve.")


class CvatInvocation(BaseModel):
    """The body CVAT's lambda manager sends to an interactor."""

    model_config = ConfigDict(extra="allow")

    image: str = Field(..., description="The frame's encoded image file, base64.",
                       json_schema_extra=BASE64)
    pos_points: List[PointXY] = Field(..., description="Clicked points [x, y], canvas coordinates "
                                      "(at least 4).", json_schema_extra={"minItems": 4})
    neg_points: List[PointXY] = Field(
        default_factory=list, description="Negative corrections [x, y], canvas coordinates (only a "
        "model that takes negative clicks: min_neg_points 0; otherwise min_neg_points is -1 and "
        "CVAT sends none).")
    obj_bbox: Optional[Any] = None
    threshold: Optional[Annotated[float, Field(ge=0.0, le=1.0)]] = None


class CvatMask(BaseModel):
    mask: List[List[int]] = Field(..., description="Rows of 0/255 over bounds.")
    bounds: List[int] = Field(..., description="[left, top, right, bottom], inclusive pixels.")
    points: List[List[float]] = Field(..., description="The mask's outline polygon [[x, y], ...].")


def function_spec(state: ServerState, port: Optional[int]) -> Dict[str, Any]:
    """The nuclio function record CVAT reads (``LambdaFunction.__init__``); ``httpPort`` is
    where CVAT's ``direct`` invoke method posts (this server's port)."""
    m = state.predictor.model
    negatives = m.takes_negatives
    return {
        "metadata": {
            "name": state.cvat_function,
            "annotations": {
                "name": f"DEXTR ({m.arch}, dextr serve)",
                "type": "interactor",
                "framework": "pytorch",
                "spec": "",
                "min_pos_points": "4",
                "min_neg_points": "0" if negatives else "-1",
                "version": "2",
                "help_message": HELP.format(negatives="; negative points mark what is not the object"
                                            if negatives else ""),
            },
        },
        "spec": {"description": f"Deep Extreme Cut, {m.arch} ({m.preprocess.name} profile), "
                                f"dextr {__version__}"},
        "status": {"state": "ready", "httpPort": port},
    }


def extreme_and_corrections(points_xy: List[List[float]]) -> Tuple[np.ndarray, np.ndarray]:
    """CVAT sends four or more positive clicks: the extreme ones (left-most, right-most, top and
    bottom, four distinct clicks) are the extreme points, the others positive corrections.

    Returns:
        ``(4, 2)`` extreme points and ``(k, 2)`` corrections, ``[y, x]`` pixel indices (canvas
        coordinate - 0.5).
    """
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2) - 0.5
    chosen: List[int] = []
    # Each extreme is taken among the clicks not chosen yet, so a click extreme in two
    # directions (a corner) is used once and four clicks are always four extreme points.
    for key in (pts[:, 0], -pts[:, 0], pts[:, 1], -pts[:, 1]):
        order = [i for i in np.argsort(key, kind="stable") if i not in chosen]
        chosen.append(int(order[0]))
    rest = [i for i in range(len(pts)) if i not in chosen]
    return pts[chosen][:, ::-1].copy(), pts[rest][:, ::-1].copy().reshape(-1, 2)


@router.get("/api/functions", summary="CVAT: the function list (a nuclio dashboard's)",
            responses=error_responses(400, 401))
def list_functions(request: Request, state: ServerState = Depends(get_state)) -> Dict[str, Any]:
    return {state.cvat_function: function_spec(state, _port(request))}


@router.get("/api/functions/{name}", summary="CVAT: one function's description",
            responses=error_responses(400, 401, 404))
def get_function(name: str, request: Request, state: ServerState = Depends(get_state)) -> Dict[str, Any]:
    if name != state.cvat_function:
        raise HTTPException(404, f"no function {name!r}; this server has {state.cvat_function!r}")
    return function_spec(state, _port(request))


def _port(request: Request) -> int:
    return request.url.port or (443 if request.url.scheme == "https" else 80)


@router.post("/api/function_invocations", response_model=CvatMask,
             responses=error_responses(400, 401, 404, 413, 422),
             summary="CVAT: invoke the interactor (dashboard invoke method)")
def invoke_via_dashboard(
    body: CvatInvocation,
    x_nuclio_function_name: Optional[str] = Header(None),
    state: ServerState = Depends(get_state),
) -> CvatMask:
    if x_nuclio_function_name not in (None, state.cvat_function):
        raise HTTPException(404, f"no function {x_nuclio_function_name!r}; this server has "
                                 f"{state.cvat_function!r}")
    return interact(body, state)


@router.post("/", response_model=CvatMask, responses=error_responses(400, 401, 413, 422),
             summary="CVAT: invoke the interactor (direct method)")
def invoke_directly(body: CvatInvocation, state: ServerState = Depends(get_state)) -> CvatMask:
    return interact(body, state)


def interact(body: CvatInvocation, state: ServerState) -> CvatMask:
    """Run DEXTR for one CVAT interaction."""
    if len(body.pos_points) < 4:
        raise HTTPException(400, f"DEXTR needs at least 4 points (the object's extreme points), "
                                 f"got {len(body.pos_points)}")
    try:
        data = base64.b64decode(body.image, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "image is not valid base64") from None
    photo = state.images.photo_from_bytes(data, "the frame")
    extreme, positive = extreme_and_corrections(body.pos_points)
    negative = np.asarray(body.neg_points, dtype=np.float64).reshape(-1, 2)[:, ::-1] - 0.5
    pred = state.predictor.predict(photo.key, photo.rgb, extreme, body.threshold,
                                   positive=positive, negative=negative)
    box = mask_box(pred.mask)
    if box is None:
        return CvatMask(mask=[[0]], bounds=[0, 0, 0, 0], points=[])
    x0, y0, x1, y1 = box
    crop = pred.mask[y0:y1 + 1, x0:x1 + 1].astype(np.uint8) * 255
    polys = polygons(pred.mask)
    outline = max(polys, key=len) if polys else []
    return CvatMask(mask=crop.tolist(), bounds=[x0, y0, x1, y1],
                    points=[[outline[i], outline[i + 1]] for i in range(0, len(outline), 2)])

