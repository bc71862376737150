"""Property tests (hypothesis): whatever objects.json, points or checkpoint metadata a user or
an attacker supplies, dextr returns a result or raises a DextrError, never another exception."""
from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dextr_lib.core.geometry import as_points_array
from dextr_lib.errors import DextrError
from dextr_lib.formats.objects import ObjectsFile, objects_from_dict, read_objects
from dextr_lib.model import DextrModel
from dextr_lib.weights import checkpoint as ckpt_io

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 1e308, -1e308, 2 ** 24, 2 ** 24 + 1, 0.5]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=25,
)
point = st.one_of(st.lists(numbers, min_size=2, max_size=2), json_values)
points_xy = st.one_of(st.lists(point, min_size=4, max_size=4), st.lists(point, max_size=6), json_values)
obj = st.fixed_dictionaries(
    {"points_xy": points_xy},
    optional={"label": json_values, "name": json_values, "source": json_values, "area": json_values},
)
image_entry = st.fixed_dictionaries(
    {"objects": st.one_of(st.lists(obj, max_size=4), json_values)},
    optional={"image": st.one_of(st.text(max_size=10), json_values),
              "height": json_values, "width": json_values},
)
objects_doc = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"format": st.one_of(st.just("dextr-objects"), json_values),
         "format_version": st.one_of(st.just(1), json_values),
         "images": st.one_of(st.lists(image_entry, max_size=3), json_values)},
        optional={"exif_transpose": json_values, "point_order": json_values},
    ),
)


@SETTINGS
@given(objects_doc)
def test_objects_dict_gives_a_result_or_a_dextr_error(data):
    try:
        result = objects_from_dict(data, base_dir="/nonexistent", source="o.json")
    except DextrError:
        return
    assert isinstance(result, ObjectsFile)
    for entry in result.images:
        for o in entry.objects:
            assert o.points.shape == (4, 2) and np.isfinite(o.points).all()
            assert o.label is None or isinstance(o.label, int)
            assert o.name is None or isinstance(o.name, str)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300) | objects_doc.map(lambda d: json.dumps(d, allow_nan=True).encode()))
def test_objects_file_bytes_give_a_result_or_a_dextr_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("o") / "objects.json"
    path.write_bytes(raw)
    try:
        read_objects(path)
    except DextrError:
        pass


array_points = st.builds(
    lambda shape, fill: np.full(shape, fill),
    st.lists(st.integers(0, 5), max_size=4).map(tuple),
    numbers,
)


@SETTINGS
@given(st.one_of(points_xy, array_points, st.lists(points_xy, max_size=3)))
def test_points_give_a_valid_array_or_a_dextr_error(points):
    try:
        arr = as_points_array(points)
    except DextrError:
        return
    assert arr.ndim == 3 and arr.shape[1:] == (4, 2) and np.isfinite(arr).all()
    assert (np.abs(arr) <= 2 ** 24).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(numbers, min_size=2, max_size=2), min_size=4, max_size=4))
def test_prediction_with_any_points_gives_a_mask_or_a_dextr_error(tiny_model, points):
    image = np.zeros((32, 40, 3), np.uint8)
    try:
        mask = tiny_model.predict_image(image, [points], threshold=0.5)[0]
    except DextrError:
        return
    assert mask.shape == (32, 40) and mask.dtype == bool


def _preprocess_fuzz(base):
    return st.dictionaries(st.sampled_from(sorted(base) + ["bogus"]), json_values, max_size=4).map(
        lambda changes: {**base, **changes})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checkpoint_metadata_gives_a_model_or_a_dextr_error(tiny_model, data):
    good = ckpt_io.make_checkpoint(tiny_model.arch, tiny_model.preprocess.to_dict(),
                                   tiny_model.net.state_dict(), {})
    ckpt = dict(good)
    ckpt["preprocess"] = data.draw(_preprocess_fuzz(good["preprocess"]), label="preprocess")
    for key in data.draw(st.lists(st.sampled_from(["format", "format_version", "arch", "meta",
                                                   "state_dict"]), max_size=2, unique=True), label="keys"):
        ckpt[key] = data.draw(json_values, label=key)
    try:
        model = DextrModel.from_checkpoint(ckpt, "cpu", source="m.pt")
    except DextrError:
        return
    assert model.preprocess.target_size >= 16
