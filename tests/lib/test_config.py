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
