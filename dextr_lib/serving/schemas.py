"""Request and response bodies of the HTTP API (FastAPI documents them at ``/docs``).

Points in the API are ``[x, y]`` = (column, row) pixel indices, as on the command line and in
``objects.json``; pixel ``i`` covers ``[i, i + 1)``, so a click at continuous position ``u`` is
index ``u - 0.5``. Floats are allowed.
"""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Annotated

from .images import canonical_id

Coordinate = Annotated[float, Field(allow_inf_nan=False)]
PointXY = Annotated[List[Coordinate], Field(min_length=2, max_length=2)]
MaskFormat = Literal["png", "rle", "polygon"]
#: An image id as /api/images lists it; other spellings of the same path (``./a.jpg``) are
#: made canonical.
ImageId = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(canonical_id)]
#: Four points: the count is in the schema (minItems/maxItems) and checked by ``_four_points``,
#: whose message says what the four points are.
FOUR_POINTS = {"minItems": 4, "maxItems": 4}
#: Base64 text (the schema states it; the server answers 400 "not valid base64" otherwise).
BASE64 = {"pattern": r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"}
#: A class name with something in it (the name is stripped).
CLASS_NAME = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
#: Most correction clicks of one kind per object (a bound on the request, far above use).
MAX_CLICKS = 100
#: Correction clicks after the four extreme points, ``[x, y]`` like them.
Clicks = Annotated[List[PointXY], Field(max_length=MAX_CLICKS)]
POSITIVE = ("Positive corrections [x, y] after the extreme points: pixels that belong to the "
            "object (every model takes them).")
NEGATIVE = ("Negative corrections [x, y]: pixels that do not belong to the object (only a model "
            "whose takes_negatives is true, GET /api/model; others answer 400).")
EDITED_MASK = ("The object's final mask as a base64 PNG of the whole image (non-zero = object), "
               "e.g. after brush edits; stored instead of the prediction (score then null). "
               "Default: the prediction for the points and clicks.")


class ErrorOut(BaseModel):
    """The body of every error answer (4xx and 5xx), validation errors included."""

    detail: str = Field(..., description="What was wrong, in one line.")


#: What each error status means, for the OpenAPI document.
_ERROR_MEANINGS = {
    400: "The request cannot be served (unreadable image, points outside it, a refused Host).",
    401: "The server has a token and the request does not carry it.",
    404: "No such image, object or function.",
    409: "The photo changed size since the object was annotated.",
    413: "The request body is larger than --max-upload-mb.",
    422: "The request does not match its schema.",
    503: "The annotations file cannot be saved (full disk, permissions); nothing was changed.",
}


def error_responses(*codes: int) -> Dict[Union[int, str], Dict[str, Any]]:
    """``responses=`` for a route: each status with the one error body."""
    return {c: {"model": ErrorOut, "description": _ERROR_MEANINGS[c]} for c in codes}


def _four_points(points: List[List[float]]) -> List[List[float]]:
    if len(points) != 4:
        raise ValueError(
            f"expected exactly 4 points [x, y] (the object's left-most, right-most, top and bottom "
            f"pixels, any order), got {len(points)}"
        )
    return points


class PredictRequest(BaseModel):
    """An object to segment: an image (its id, or the encoded file as base64) and four points."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["image_id"]}, {"required": ["image"]}]})

    image_id: ImageId = Field(
        None, description="An id from GET /api/images or POST /api/images (upload).")
    image: str = Field(
        None, description="The encoded image file (JPEG, PNG, ...) as base64, instead of image_id.",
        json_schema_extra=BASE64)
    points: List[PointXY] = Field(
        ..., description="The four extreme points [x, y] (column, row), any order.",
        examples=[[[101, 318], [463, 395], [213, 216], [447, 432]]], json_schema_extra=FOUR_POINTS)
    positive: Clicks = Field(default_factory=list, description=POSITIVE)
    negative: Clicks = Field(default_factory=list, description=NEGATIVE)
    format: MaskFormat = Field(
        "png", description="png: base64 8-bit PNG (255 = object); rle: COCO compressed RLE; "
        "polygon: COCO polygons [[x0, y0, x1, y1, ...], ...].")
    crop: bool = Field(
        False, description="png/polygon only: the PNG covers just the mask's box (bbox), "
        "polygons stay in image coordinates; smaller and faster for large photos.")
    threshold: Optional[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        None, description="Probability threshold (default: the server's).")

    _points = field_validator("points")(_four_points)

    @model_validator(mode="after")
    def _one_image(self):
        if (self.image_id is None) == (self.image is None):
            raise ValueError("give either image_id (from /api/images) or image (base64 bytes)")
        return self


class Timing(BaseModel):
    model_ms: float = Field(..., description="The network's time (0 when the result was cached).")
    total_ms: float = Field(..., description="The request's time in the server.")


class PredictResponse(BaseModel):
    image_id: Optional[str]
    width: int
    height: int
    format: MaskFormat
    mask: Union[str, Dict[str, Any], List[List[float]]] = Field(
        ..., description="png: base64 PNG; rle: {size: [H, W], counts: str}; polygon: list of "
        "flat [x0, y0, ...] lists.")
    bbox: List[float] = Field(..., description="[x, y, w, h] of the mask's pixels (COCO).")
    area: int = Field(..., description="Object pixels.")
    score: float = Field(..., description="Mean probability over the mask's pixels (0 if empty).")
    threshold: float
    points: List[List[float]]
    positive: List[List[float]] = Field(default_factory=list)
    negative: List[List[float]] = Field(default_factory=list)
    timing: Timing


class UploadResponse(BaseModel):
    image_id: str
    name: str
    width: int
    height: int


class ImageItem(BaseModel):
    id: str
    name: str
    objects: int


class ImageList(BaseModel):
    images: List[ImageItem]
    classes: List[str]
    can_upload: bool
    annotations_file: str
    total_objects: int


class ObjectOut(BaseModel):
    id: int
    image_id: str
    category: str
    points: Optional[List[List[float]]] = Field(
        None, description="The extreme points [x, y] it was made from (left, right, top, bottom).")
    positive: List[List[float]] = Field(default_factory=list, description="Its positive corrections [x, y].")
    negative: List[List[float]] = Field(default_factory=list, description="Its negative corrections [x, y].")
    bbox: List[float]
    area: int
    score: Optional[float] = None


class ImageDetail(BaseModel):
    id: str
    name: str
    width: int
    height: int
    objects: List[ObjectOut]


class ObjectCreate(BaseModel):
    """Accept an object: the server runs (or reuses) the prediction for these points."""

    model_config = ConfigDict(extra="forbid")

    image_id: ImageId
    points: List[PointXY] = Field(..., json_schema_extra=FOUR_POINTS)
    positive: Clicks = Field(default_factory=list, description=POSITIVE)
    negative: Clicks = Field(default_factory=list, description=NEGATIVE)
    mask: Optional[str] = Field(None, description=EDITED_MASK, json_schema_extra=BASE64)
    category: CLASS_NAME
    threshold: Optional[Annotated[float, Field(ge=0.0, le=1.0)]] = None

    _points = field_validator("points")(_four_points)

    @field_validator("category")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip() or v  # the schema's pattern already refuses names of spaces only


class ObjectUpdate(BaseModel):
    """Re-edit an object: new points, clicks or mask (any of them: the mask is predicted again
    from the points, the stored ones if not given, and the clicks, or ``mask`` is stored) and/or
    a new class."""

    model_config = ConfigDict(extra="forbid")

    points: Optional[Annotated[List[PointXY], Field(json_schema_extra=FOUR_POINTS)]] = None
    positive: Clicks = Field(default_factory=list, description=POSITIVE)
    negative: Clicks = Field(default_factory=list, description=NEGATIVE)
    mask: Optional[str] = Field(None, description=EDITED_MASK, json_schema_extra=BASE64)
    category: Optional[CLASS_NAME] = None
    threshold: Optional[Annotated[float, Field(ge=0.0, le=1.0)]] = None

    @field_validator("points")
    @classmethod
    def _four(cls, v):
        return None if v is None else _four_points(v)


class ModelInfo(BaseModel):
    arch: str
    profile: str
    target_size: int
    device: str
    precision: str
    threshold: float
    takes_negatives: bool = Field(..., description="Whether the model takes negative correction "
                                  "clicks (a negative-click input channel).")
    dextr_version: str


class Health(BaseModel):
    status: Literal["ok"]
