"""The typed config (nclab.train.config.Config): parsed once by load_config, frozen, one table per section."""

from __future__ import annotations

import dataclasses

import yaml

import pytest

from nclab.train.config import SCHEMA, Config, OptimSpec, defaults, load_config, option
from nclab.utils.errors import NclabError


def test_load_config_returns_a_frozen_typed_config():
    cfg = load_config("tiny", ["optim.lr=0.05", "data.augment.flip=true"])
    assert isinstance(cfg, Config) and isinstance(cfg.optim, OptimSpec)
    assert cfg.optim.lr == 0.05 and cfg.data.augment.flip is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3
    # typed lists are tuples: nothing inside a config can be changed in place
    assert isinstance(cfg.schedule.milestones, tuple) and isinstance(cfg.optim.betas, tuple)


def test_the_dataclass_fields_are_the_schema():
    # SCHEMA (what the YAML is checked against) is derived from the fields: the same keys, and each leaf's
    # default is the dataclass default (the plain mapping of an unconfigured Config equals defaults())
    def keys(schema, prefix=""):
        for k, v in schema.items():
            yield from keys(v, prefix + k + ".") if isinstance(v, dict) else [prefix + k]

    def field_keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            sub = f.metadata.get("section")
            if sub is not None:
                yield from field_keys(sub, prefix + f.name + ".")
            elif "schema" in f.metadata:
                yield from (prefix + f.name + "." + k for k in f.metadata["schema"])
            else:
                yield prefix + f.name

    assert sorted(keys(SCHEMA)) == sorted(field_keys(Config))
    assert Config().to_dict() == defaults()
    assert load_config(None) == Config.from_checked(defaults())


def test_to_dict_round_trips_and_is_what_yaml_holds():
    import yaml

    cfg = load_config("fast_coarse5", ["callbacks={recovery: {epochs: [2]}}"])
    d = cfg.to_dict()
    assert load_config(d) == cfg
    assert yaml.safe_load(yaml.safe_dump(d)) == d  # plain lists and dicts only
    assert d["model"]["widths"] == [64, 256, 256] and d["schedule"]["milestones"] == list(cfg.schedule.milestones)


def test_replace_and_overrides_validate_like_the_yaml():
    cfg = load_config("tiny")
    assert cfg.replace(callbacks={}).callbacks == {}
    assert cfg.replace(optim=cfg.optim.replace(lr=0.5)).optim.lr == 0.5
    assert cfg.with_overrides(["optim.lr=0.25"]).optim.lr == 0.25 and cfg.optim.lr != 0.25  # a copy
    with pytest.raises(NclabError, match="config key lr=-1.0 is too small"):
        cfg.optim.replace(lr=-1.0)
    with pytest.raises(NclabError, match="unknown config key lrr; did you mean lr"):
        cfg.optim.replace(lrr=0.1)
    with pytest.raises(NclabError, match="label_smoothing applies to loss.name=ce only"):
        cfg.replace(loss=cfg.loss.replace(name="mse", label_smoothing=0.1))


def test_a_config_passes_through_without_being_checked_again(monkeypatch, tmp_path):
    from nclab.train import Trainer, config

    cfg = load_config("tiny", ["optim.epochs=1", "data.source=synthetic"])
    assert load_config(cfg) is cfg

    def no_second_check(*a, **k):
        raise AssertionError("the config was validated a second time")

    monkeypatch.setattr(config, "_check", no_second_check)
    monkeypatch.setattr(config, "_cross_check", no_second_check)
    tr = Trainer(cfg, tmp_path / "r")
    assert tr.cfg is cfg
    with pytest.raises(AssertionError, match="a second time"):  # a mapping still goes through the checks
        Trainer(cfg.to_dict(), tmp_path / "r2")


def test_cli_flags_that_mirror_config_keys_take_its_choices():
    from nclab.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    device = option("train.device").choices
    for cmd in ("train", "demo"):
        flag = next(a for a in sub[cmd]._actions if a.dest == "device")
        assert tuple(flag.choices) == device
    metrics = next(a for a in sub["metrics"]._actions if a.dest == "device")
    assert list(metrics.choices) == [c for c in device if c != "auto"]


def test_a_saved_run_with_head_width_and_a_one_layer_head_still_loads(tmp_path):
    # runs saved before the head_width rule (dln-cifar10-imbalanced's M = 1 sub-runs) must resume and measure;
    # a new config with the same keys is still an error
    from nclab.train import load_config

    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "mlp", "head_depth": 1, "head_width": 16}}))
    assert load_config(str(run / "config.yaml")).model.head_width is None
    (tmp_path / "new.yaml").write_text((run / "config.yaml").read_text())
    with pytest.raises(NclabError, match="head_width"):
        load_config(str(tmp_path / "new.yaml"))
