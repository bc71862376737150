"""Config: lookup order, validation errors naming the key, and dextr.toml.example."""
from __future__ import annotations

import dataclasses
import re
import sys

import pytest

from dextr_lib.config import Config, config_from_dict, load_config
from dextr_lib.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "dextr.toml.example"


def _tables():
    return {f.name: f.type for f in dataclasses.fields(Config) if f.name != "source"}


def test_no_file_gives_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.source is None
    assert cfg == Config()


def test_lookup_order_explicit_then_env_then_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dextr.toml").write_text("[predict]\nbatch_size = 3\n")
    env = tmp_path / "env.toml"
    env.write_text("[predict]\nbatch_size = 5\n")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[predict]\nbatch_size = 7\n")
    assert load_config().predict.batch_size == 3
    monkeypatch.setenv("DEXTR_CONFIG", str(env))
    assert load_config().predict.batch_size == 5
    assert load_config(explicit).predict.batch_size == 7


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    sub = tmp_path / "conf"
    sub.mkdir()
    p = sub / "c.toml"
    p.write_text('[paths]\npascal_voc = "data/VOC2012"\n')
    assert load_config(p).paths.pascal_voc == str((sub / "data" / "VOC2012").resolve())


@pytest.mark.parametrize(
    "text, needles",
    [
        ("[predict]\nbatch_sise = 3\n", ["[predict]", "batch_sise", "batch_size"]),
        ("[predict]\nbatch_size = \"8\"\n", ["[predict]", "batch_size", "integer"]),
        ("[predict]\nthreshold = true\n", ["[predict]", "threshold", "number"]),
        ("[points_from_mask]\nlargest_component = 1\n", ["[points_from_mask]", "largest_component"]),
        ("[predikt]\nmodel = \"x\"\n", ["[predikt]", "known tables"]),
        ("predict = 3\n", ["predict", "table"]),
        ("[predict\n", ["invalid TOML"]),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, needles):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    for n in needles:
        assert n in str(e.value)
    assert str(p) in str(e.value)


def test_missing_explicit_or_env_file_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    monkeypatch.setenv("DEXTR_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match="DEXTR_CONFIG"):
        load_config()


def test_int_accepted_where_float_expected():
    cfg = config_from_dict({"predict": {"threshold": 1}})
    assert cfg.predict.threshold == 1.0 and isinstance(cfg.predict.threshold, float)


def test_example_parses():
    cfg = load_config(EXAMPLE)
    assert cfg.source == str(EXAMPLE)


def test_example_values_are_the_defaults():
    """Keys set in the example claim to show defaults (commented-out keys are examples)."""
    raw = tomllib.loads(EXAMPLE.read_text())
    tables = _tables()
    for table, values in raw.items():
        assert table in tables, f"example has unknown table [{table}]"
        defaults = getattr(Config(), table)
        for key, value in values.items():
            assert value == getattr(defaults, key), (
                f"dextr.toml.example sets [{table}] {key} = {value!r}, but the default is "
                f"{getattr(defaults, key)!r}; fix the example or comment the key out"
            )


def test_example_documents_every_table_and_key():
    text = EXAMPLE.read_text()
    sections = dict(
        (m.group(1), m.end()) for m in re.finditer(r"^\[([a-z_]+)\]\s*$", text, flags=re.M)
    )
    for table in _tables():
        assert table in sections, f"dextr.toml.example lacks the [{table}] table"
        start = sections[table]
        nxt = min([v for v in sections.values() if v > start] + [len(text)])
        body = text[start:nxt]
        for f in dataclasses.fields(getattr(Config(), table)):
            assert re.search(rf"^#?\s*{f.name}\s*=", body, flags=re.M), (
                f"dextr.toml.example does not document [{table}] {f.name}"
            )


def test_every_path_in_a_config_file_is_relative_to_that_file(tmp_path, monkeypatch):
    conf = tmp_path / "project" / "conf"
    conf.mkdir(parents=True)
    (conf / "nameless").write_text("")  # a model file without extension, beside the config
    (conf / "dextr.toml").write_text(
        '[paths]\njobs = "runs"\n'
        '[predict]\nmodel = "models/m.pt"\n'
        '[eval]\nmodel = "pascal-sbd"\nimage_pat = ["imgs/*.png", "/abs/*.png", "@lists/val.txt"]\n'
        'target_pat = ["~/labels/*.png"]\n'
        '[serve]\nmodel = "nameless"\nimages = "photos"\n'
        '[train]\ndataset = "custom_label"\nimage_pat = ["data/*.png"]\ntarget_pat = ["data/*_mask.png"]\n'
        'from_model = "../best.pt"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("../project/conf/dextr.toml"))
    base = str(conf.resolve())
    assert cfg.paths.jobs == f"{base}/runs"
    assert cfg.predict.model == f"{base}/models/m.pt"
    assert cfg.eval.model == "pascal-sbd"  # a model-zoo name stays a name
    assert cfg.eval.image_pat == [f"{base}/imgs/*.png", "/abs/*.png", f"@{base}/lists/val.txt"]
    assert cfg.eval.target_pat == [str(Path.home() / "labels" / "*.png")]
    assert cfg.serve.model == f"{base}/nameless" and cfg.serve.images == f"{base}/photos"
    assert cfg.train.image_pat == [f"{base}/data/*.png"] and cfg.train.target_pat == [f"{base}/data/*_mask.png"]
    assert Path(cfg.train.from_model) == conf / ".." / "best.pt"
    # Keys the file does not set keep their defaults.
    assert cfg.serve.annotations == Config().serve.annotations and cfg.train.val_image_pat == []


# -- the one field helper, range checker and merge (dextr_lib.config) ---------------------------
from dextr_lib.config import (  # noqa: E402
    EvalSettings,
    PointsFromMaskSettings,
    ServeSettings,
    TrainSettings,
    check_dataset,
    merge_settings,
)


@pytest.mark.parametrize("make, message", [
    (lambda: ServeSettings(max_upload_mb=0.0), "[serve] max_upload_mb: must be > 0.0, got 0.0"),
    (lambda: EvalSettings(thresholds=[0.5, 1.5]), "[eval] thresholds: must be <= 1.0, got 1.5"),
    (lambda: PointsFromMaskSettings(kind="blob"), "[points_from_mask] kind: expected one of label, mask, got 'blob'"),
    (lambda: TrainSettings(opt_type="rmsprop"), "[train] opt_type: expected one of sgd, adam, got 'rmsprop'"),
    (lambda: TrainSettings(label_ignore_index=-2), "[train] label_ignore_index: must be >= -1, got -2"),
])
def test_one_range_checker_covers_above_list_items_and_choices(make, message):
    with pytest.raises(ConfigError) as e:
        make()
    assert str(e.value) == message


@pytest.mark.parametrize("text, message", [
    ("[serve]\nmax_upload_mb = 0\n", "[serve] max_upload_mb: must be > 0.0, got 0.0"),
    ("[eval]\nthresholds = [0.2, 2]\n", "[eval] thresholds: must be <= 1.0, got 2.0"),
])
def test_a_bad_config_value_is_named_table_and_key(tmp_path, text, message):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}: {message}"


def test_merge_takes_the_given_value_else_the_configs_else_the_default():
    table = config_from_dict({"eval": {"device": "cpu", "worst": 9, "image_pat": ["/a/*.png"]}}).eval
    merged = merge_settings(table, {"device": "cuda", "worst": None, "batch_size": None, "image_pat": [],
                                    "threshold": 0.3})
    assert (merged.device, merged.worst, merged.image_pat, merged.threshold) == ("cuda", 9, ["/a/*.png"], 0.3)
    assert merged.batch_size is None and merged.split == "val"  # the defaults
    assert table.device == "cpu" and table.threshold is None  # the config's table is left as it was


def test_merge_checks_the_given_values_and_refuses_unknown_names():
    with pytest.raises(ConfigError, match=r"^\[eval\] worst: must be >= 1, got 0$"):
        merge_settings(EvalSettings(), {"worst": 0})
    with pytest.raises(TypeError, match="no settings warst"):
        merge_settings(EvalSettings(), {"warst": 3})


@pytest.mark.parametrize("settings, message", [
    (EvalSettings(), "[eval] dataset: choose a dataset kind"),
    (EvalSettings(dataset="voc"), "[eval] dataset: expected one of pascal_voc, custom_label, custom_mask, coco"),
    (EvalSettings(dataset="coco"), "[eval] annotations: dataset coco needs its instances file"),
    (TrainSettings(dataset="coco", annotations="a.json", image_pat=["x"]), "[train] image_pat: dataset coco reads"),
    (TrainSettings(dataset="coco", annotations="a.json", val_images="v"), "[train] val_images: val_images"),
    (TrainSettings(categories=["dog"]), "[train] categories: annotations, images and categories"),
    (TrainSettings(val_image_pat=["x"]), "[train] image_pat: pascal_voc finds its files"),
    (EvalSettings(dataset="custom_mask", target_pat=["m"]), "[eval] image_pat: dataset custom_mask needs both"),
    (TrainSettings(dataset="custom_mask", image_pat=["i"], target_pat=["m"], val_target_pat=["v"]),
     "[train] val_image_pat: give both"),
])
def test_dataset_settings_are_checked_in_one_place(settings, message):
    with pytest.raises(ConfigError) as e:
        check_dataset(settings)
    assert str(e.value).startswith(message)


def test_dataset_settings_that_fit_pass():
    check_dataset(TrainSettings())  # pascal_voc
    check_dataset(EvalSettings(dataset="coco", annotations="a.json", categories=["dog"]))
    check_dataset(TrainSettings(dataset="custom_label", image_pat=["i"], target_pat=["t"],
                                val_image_pat=["vi"], val_target_pat=["vt"]))
