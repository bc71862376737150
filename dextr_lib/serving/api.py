"""The HTTP API of ``dextr serve``: model info, images, predictions and the annotations file."""
from __future__ import annotations

import base64
import binascii
import io
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import PIL.Image
from fastapi import APIRouter, Depends, File, HTTPException, Response, UploadFile

from ..core.geometry import check_points_in_image, xy_to_yx
from ..errors import DatasetError, InvalidPointsError
from ..formats import coco
from ..version import __version__
from .images import BROWSER_MEDIA_TYPES, Photo, canonical_id
from .predictor import Prediction
from .schemas import (
    ImageDetail, ImageItem, ImageList, ModelInfo, ObjectCreate, ObjectOut, ObjectUpdate, PredictRequest,
    PredictResponse, Timing, UploadResponse, error_responses,
)
from .state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["api"])


# -- helpers -------------------------------------------------------------------------------------
def mask_box(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """``(x0, y0, x1, y1)`` inclusive pixel box of a mask, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def png_bytes(mask: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a mask: 255 on the object, 0 elsewhere."""
    buf = io.BytesIO()
    PIL.Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons of a mask, computed on its box only (same result, less work)."""
    box = mask_box(mask)
    if box is None:
        return []
    x0, y0, x1, y1 = box
    polys = coco.mask_to_polygons(mask[y0:y1 + 1, x0:x1 + 1])
    return [[round(v + (x0 if i % 2 == 0 else y0), 2) for i, v in enumerate(p)] for p in polys]


def encode_mask(mask: np.ndarray, fmt: str, crop: bool) -> Any:
    if fmt == "rle":
        return coco.encode_mask(mask)
    if fmt == "polygon":
        return polygons(mask)
    box = mask_box(mask) if crop else None
    if box is not None:
        x0, y0, x1, y1 = box
        mask = mask[y0:y1 + 1, x0:x1 + 1]
    return base64.b64encode(png_bytes(mask)).decode("ascii")


def check_points(points_xy: List[List[float]], photo: Photo) -> np.ndarray:
    """``[x, y]`` points -> ``(4, 2)`` ``[y, x]``, refusing (400) points outside the image by
    the library's one rule (:func:`~dextr_lib.core.geometry.check_points_in_image`)."""
    pts = xy_to_yx(points_xy)
    try:
        check_points_in_image(pts, (photo.height, photo.width))
    except InvalidPointsError as e:
        raise HTTPException(400, str(e)) from None
    return pts


def points_xy_of(points_yx: Optional[np.ndarray]) -> Optional[List[List[float]]]:
    if points_yx is None:
        return None
    return [[float(x), float(y)] for y, x in np.asarray(points_yx).reshape(-1, 2)]


def decode_mask(text: str, photo: Photo) -> np.ndarray:
    """An edited mask sent as a base64 PNG of the whole photo -> ``(H, W)`` bool (non-zero =
    object); 400 when it is no image or not the photo's size (checked before decoding)."""
    try:
        with PIL.Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as im:
            if im.size != (photo.width, photo.height):
                raise HTTPException(400, f"the mask is {im.size[0]}x{im.size[1]}, the photo "
                                         f"{photo.width}x{photo.height}; send a mask of the whole photo")
            return np.asarray(im.convert("L")) != 0
    except PIL.Image.DecompressionBombError:  # past the pixel limit, so larger than any photo
        raise HTTPException(400, f"the mask is larger than the photo ({photo.width}x{photo.height}); "
                                 "send a mask of the whole photo") from None
    except (binascii.Error, ValueError, OSError, PIL.UnidentifiedImageError, SyntaxError):
        raise HTTPException(400, "the mask is not a base64 PNG (or other image) file") from None


def object_out(state: ServerState, ann: Dict[str, Any], image_id: str) -> ObjectOut:
    store = state.annotations
    positive, negative = store.clicks_yx(ann)
    return ObjectOut(
        id=int(ann["id"]), image_id=image_id, category=store.category_name(ann["category_id"]),
        points=points_xy_of(store.points_yx(ann)), positive=points_xy_of(positive),
        negative=points_xy_of(negative), bbox=[float(v) for v in ann["bbox"]],
        area=int(ann["area"]), score=ann.get("score"),
    )


def find_annotation(state: ServerState, ann_id: int) -> Dict[str, Any]:
    try:
        return state.annotations.annotation(ann_id)
    except DatasetError:
        raise HTTPException(404, f"no object with id {ann_id} in the annotations file") from None


def clicks_yx(positive_xy, negative_xy) -> Dict[str, np.ndarray]:
    """The request's correction clicks ``[x, y]`` as the predictor's ``positive``/``negative``
    ``(k, 2)`` ``[y, x]`` keyword arguments."""
    return {"positive": xy_to_yx(positive_xy).reshape(-1, 2),
            "negative": xy_to_yx(negative_xy).reshape(-1, 2)}


def run_prediction(state: ServerState, photo: Photo, req) -> Tuple[np.ndarray, Dict[str, np.ndarray], Prediction]:
    """Predict ``req``'s object (its points, clicks and threshold) on ``photo``; a click the
    model cannot use (a negative one without the channel, one outside the crop) is the
    library's ``CorrectionError``, answered 400."""
    pts = check_points(req.points, photo)
    clicks = clicks_yx(req.positive, req.negative)
    return pts, clicks, state.predictor.predict(photo.key, photo.rgb, pts, req.threshold, **clicks)


# -- model and images ----------------------------------------------------------------------------
@router.get("/model", response_model=ModelInfo,
             responses=error_responses(400, 401), summary="The model being served")
def model_info(state: ServerState = Depends(get_state)) -> ModelInfo:
    m = state.predictor.model
    return ModelInfo(arch=m.arch, profile=m.preprocess.name, target_size=m.preprocess.target_size,
                     device=str(m.device), precision=state.predictor.precision,
                     threshold=state.predictor.threshold,
                     takes_negatives=m.takes_negatives,
                     dextr_version=__version__)


@router.get("/images", response_model=ImageList,
             responses=error_responses(400, 401), summary="The photos and their object counts")
def list_images(state: ServerState = Depends(get_state)) -> ImageList:
    counts = state.annotations.counts()
    items = [ImageItem(id=i, name=i, objects=counts.get(i, 0)) for i in state.images.list_ids()]
    for i in state.images.upload_ids():
        name = state.coco_name(i)
        items.append(ImageItem(id=i, name=name, objects=counts.get(name, 0)))
    return ImageList(images=items, classes=state.annotations.classes,
                     can_upload=state.images.root is None,
                     annotations_file=str(state.annotations.path),
                     total_objects=sum(counts.values()))


@router.post("/images", response_model=UploadResponse, status_code=201,
             responses=error_responses(400, 401, 413, 422),
             summary="Upload a photo (kept in memory; annotate it by the returned id)")
def upload_image(file: UploadFile = File(...),
                 state: ServerState = Depends(get_state)) -> UploadResponse:
    data = file.file.read()  # a plain def: decoding runs in the thread pool, not the event loop
    image_id, photo = state.add_upload(data, file.filename or "upload")
    return UploadResponse(image_id=image_id, name=state.coco_name(image_id),
                          width=photo.width, height=photo.height)


@router.get("/images/{image_id:path}", response_model=ImageDetail,
            responses=error_responses(400, 401, 404),
            summary="One photo's size and stored objects")
def image_detail(image_id: str, state: ServerState = Depends(get_state)) -> ImageDetail:
    image_id = canonical_id(image_id)
    h, w = state.images.size_of(image_id)
    anns = state.annotations.objects(state.coco_name(image_id))
    return ImageDetail(id=image_id, name=state.coco_name(image_id), width=w, height=h,
                       objects=[object_out(state, a, image_id) for a in anns])


@router.get("/files/{image_id:path}", summary="The photo itself, as a browser shows it",
            response_class=Response, responses={
                200: {"content": {m: {} for m in BROWSER_MEDIA_TYPES}},
                **error_responses(400, 401, 404)})
def image_file(image_id: str, state: ServerState = Depends(get_state)) -> Response:
    image_id = canonical_id(image_id)
    data, media_type = state.images.browser_image(image_id)
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=60"})


# -- predictions ---------------------------------------------------------------------------------
@router.post("/predict", response_model=PredictResponse,
             responses=error_responses(400, 401, 404, 413, 422),
             summary="The mask of an object from its four extreme points (and correction clicks)")
def predict(req: PredictRequest, state: ServerState = Depends(get_state)) -> PredictResponse:
    t0 = time.perf_counter()
    if req.image is not None:
        try:
            data = base64.b64decode(req.image, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(400, "image is not valid base64") from None
        photo = state.images.photo_from_bytes(data)
    else:
        photo = state.images.photo(req.image_id)
    _, clicks, pred = run_prediction(state, photo, req)
    box = mask_box(pred.mask)
    bbox = [0.0] * 4 if box is None else [float(box[0]), float(box[1]),
                                          float(box[2] - box[0] + 1), float(box[3] - box[1] + 1)]
    mask = encode_mask(pred.mask, req.format, req.crop)
    return PredictResponse(
        image_id=req.image_id, width=photo.width, height=photo.height, format=req.format,
        mask=mask, bbox=bbox, area=int(pred.mask.sum()), score=pred.score, threshold=pred.threshold,
        points=[[float(x), float(y)] for x, y in req.points],
        positive=points_xy_of(clicks["positive"]), negative=points_xy_of(clicks["negative"]),
        timing=Timing(model_ms=pred.model_ms, total_ms=(time.perf_counter() - t0) * 1000),
    )


# -- annotations ---------------------------------------------------------------------------------
@router.get("/annotations",
             responses=error_responses(400, 401), summary="The whole annotations file (COCO instances JSON)")
def annotations(state: ServerState = Depends(get_state)) -> Dict[str, Any]:
    return state.annotations.to_dict()


@router.post("/objects", response_model=ObjectOut, status_code=201,
             responses=error_responses(400, 401, 404, 413, 422, 503),
             summary="Accept an object: its mask (predicted, or the edited one sent) and clicks "
                     "are stored in the annotations file at once")
def create_object(req: ObjectCreate, state: ServerState = Depends(get_state)) -> ObjectOut:
    photo = state.images.photo(req.image_id)
    pts, clicks, pred = run_prediction(state, photo, req)
    mask, score = (pred.mask, pred.score) if req.mask is None else (decode_mask(req.mask, photo), None)
    upload = state.images.is_upload(req.image_id)
    ann = state.annotations.add(state.coco_name(req.image_id), photo.height, photo.width,
                                mask, pts, req.category, score,
                                content_key=photo.key if upload else None, **clicks)
    return object_out(state, ann, req.image_id)


@router.put("/objects/{ann_id}", response_model=ObjectOut,
             responses=error_responses(400, 401, 404, 409, 413, 422, 503), summary="Re-edit a stored object")
def update_object(ann_id: int, req: ObjectUpdate, state: ServerState = Depends(get_state)) -> ObjectOut:
    ann = find_annotation(state, ann_id)
    image_id = state.image_id_for(state.annotations.file_name_of(ann))
    if not req.model_fields_set & {"points", "positive", "negative", "mask"}:
        new = state.annotations.replace(ann_id, category=req.category)
    else:
        if req.points is None:  # new clicks or mask on the stored extreme points
            stored = state.annotations.points_yx(ann)
            if stored is None:
                raise HTTPException(400, f"object {ann_id} has no extreme points: send the four points")
            req = req.model_copy(update={"points": points_xy_of(stored)})
        photo = state.images.photo(image_id)
        if (photo.height, photo.width) != state.annotations.image_size(ann):
            raise HTTPException(409, f"{image_id} is now {photo.width}x{photo.height}, not the size "
                                     f"object {ann_id} was annotated on")
        pts, clicks, pred = run_prediction(state, photo, req)
        mask, score = (pred.mask, pred.score) if req.mask is None else (decode_mask(req.mask, photo), None)
        new = state.annotations.replace(ann_id, mask=mask, points_yx=pts,
                                        category=req.category, score=score, **clicks)
    return object_out(state, new, image_id)


@router.delete("/objects/{ann_id}", response_model=ObjectOut,
               responses=error_responses(400, 401, 404, 422, 503), summary="Delete a stored object")
def delete_object(ann_id: int, state: ServerState = Depends(get_state)) -> ObjectOut:
    ann = find_annotation(state, ann_id)
    image_id = state.image_id_for(state.annotations.file_name_of(ann))
    out = object_out(state, ann, image_id)
    state.annotations.remove(ann_id)
    return out


@router.get("/objects/{ann_id}/mask.png", response_class=Response,
            responses={200: {"content": {"image/png": {}}}, **error_responses(400, 401, 404, 422)},
            summary="A stored object's mask (crop=true: just its box)")
def object_mask(ann_id: int, crop: bool = False, state: ServerState = Depends(get_state)) -> Response:
    find_annotation(state, ann_id)
    mask = state.annotations.mask(ann_id)
    box = mask_box(mask) if crop else None
    if box is not None:
        mask = mask[box[1]:box[3] + 1, box[0]:box[2] + 1]
    return Response(png_bytes(mask), media_type="image/png")
