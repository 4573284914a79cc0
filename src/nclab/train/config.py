"""Training configs: defaults, validation, ``--set key=value`` overrides.

``load_config(path_or_dict_or_name, overrides)`` returns a frozen :class:`Config` (sections :class:`DataSpec`,
:class:`ModelSpec`, :class:`OptimSpec`, :class:`ScheduleSpec`, :class:`LossSpec`, :class:`TrainSpec`,
:class:`~nclab.contracts.recovery.RecoverySpec`) with every key present. The dataclass fields are the one table of
each key's type, allowed values or interval, default and help (:func:`opt`); ``SCHEMA`` is derived from them.
A bare name (``fast``) resolves to a shipped config (``nclab/configs/fast.yaml``).
Validation: an unknown key names itself and the closest valid keys (difflib); a wrong type or value
says what is allowed. ``callbacks`` and ``data.subsample`` are free-form (checked by their consumers).
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from nclab.contracts.recovery import PARAMS as RECOVERY_PARAMS
from nclab.contracts.recovery import RecoverySpec
from nclab.utils.yamlio import DuplicateKeyError, safe_load_unique
from nclab.utils.errors import NclabError


class Opt:
    """A config leaf: allowed types (tuple), optional allowed values, default, help."""

    def __init__(self, default: Any, types: tuple, choices: tuple | None = None, nullable: bool = False,
                 minimum: float | None = None, below: float | None = None, help: str = ""):
        self.default, self.types, self.choices, self.nullable = default, types, choices, nullable
        self.minimum, self.below, self.help = minimum, below, help

    def describe(self) -> str:
        if self.choices:
            s = "one of " + ", ".join(map(str, self.choices))
        else:
            s = " or ".join(t.__name__ for t in self.types)
            if self.minimum is not None:
                s += f" >= {self.minimum}"
            if self.below is not None:
                s += f" and < {self.below}"
        return s + (" or null" if self.nullable else "")

    def check(self, key: str, v: Any) -> Any:
        if v is None:
            if self.nullable:
                return None
            raise NclabError(f"config key {key} must be {self.describe()}, got null")
        if float in self.types and isinstance(v, str):
            try:  # YAML 1.1 reads 1e10 / 5e-4 (no dot) as strings
                v = float(v)
            except ValueError:
                pass
        if float in self.types and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, float) and not math.isfinite(v):  # nan passes every < / >= check below
            raise NclabError(f"config key {key}={v!r} must be a finite number ({self.describe()})")
        if isinstance(v, bool) and bool not in self.types:
            raise NclabError(f"config key {key} must be {self.describe()}, got {v!r}")
        if not isinstance(v, self.types):
            raise NclabError(f"config key {key} must be {self.describe()}, got {v!r} ({type(v).__name__})")
        if self.choices and v not in self.choices:
            close = difflib.get_close_matches(str(v), [str(c) for c in self.choices], n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise NclabError(f"config key {key}={v!r} is not allowed{hint}; choose {self.describe()}")
        if self.minimum is not None and isinstance(v, (int, float)) and v < self.minimum:
            raise NclabError(f"config key {key}={v!r} is too small; it must be {self.describe()}")
        if self.below is not None and isinstance(v, (int, float)) and v >= self.below:
            raise NclabError(f"config key {key}={v!r} is too large; it must be {self.describe()}")
        return v


NUM = (int, float)
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MODEL_NAMES = ("resnet18", "fastnet", "vgg11", "vgg16", "mlp", "linear")


def opt(default: Any, types: tuple, **kw: Any) -> Any:
    """A dataclass field whose metadata holds its :class:`Opt` (the one place its domain and default live)."""
    o = Opt(default, types, **kw)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(_frozen(default)), metadata={"opt": o})
    return field(default=default, metadata={"opt": o})


def _frozen(v: Any) -> Any:
    """Typed fields hold tuples where the YAML has lists (a frozen config has no mutable lists to change)."""
    return tuple(_frozen(x) for x in v) if isinstance(v, list) else v


def _plain(v: Any) -> Any:
    """The YAML/JSON form of a field value: tuples back to lists, sections to dicts."""
    if isinstance(v, Section):
        return v.to_dict()
    if isinstance(v, RecoverySpec):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


@dataclass(frozen=True)
class Section:
    """A config section: each field is an :func:`opt` leaf or a nested section. ``schema()`` is the table the
    YAML is checked against (did-you-mean errors, types, choices, intervals); ``from_checked`` builds the frozen
    record from a checked mapping; ``to_dict`` gives the mapping back (what config.yaml holds)."""

    @classmethod
    def schema(cls) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(cls):
            if "opt" in f.metadata:
                out[f.name] = f.metadata["opt"]
            elif "schema" in f.metadata:
                out[f.name] = f.metadata["schema"]
            else:
                out[f.name] = f.metadata["section"].schema()
        return out

    @classmethod
    def from_checked(cls, d: dict[str, Any]) -> Any:
        kw = {}
        for f in fields(cls):
            v = d[f.name]
            if "section" in f.metadata:
                kw[f.name] = f.metadata["section"].from_checked(v)
            elif "build" in f.metadata:
                kw[f.name] = f.metadata["build"](v)
            elif f.name in _FREE_FORM:
                kw[f.name] = copy.deepcopy(v)
            else:
                kw[f.name] = _frozen(copy.deepcopy(v))
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> Any:
        """A copy with the fields in ``changes`` replaced (checked like the YAML): ``cfg.optim.replace(lr=0.05)``.
        A section or free-form mapping given here replaces the old one whole."""
        return type(self).from_checked(_check({**self.to_dict(), **_plain(changes)}, self.schema()))


def section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"section": cls})


# free-form values (checked by their consumers) keep the YAML's own lists and dicts
_FREE_FORM = {"subsample", "loggers", "callbacks"}


@dataclass(frozen=True)
class LabelNoiseSpec(Section):
    rate: float = opt(0.0, NUM, minimum=0, below=1, help="fraction of train labels (the labels the net is trained "
                      "on) changed to another class; exactly round(rate * N) of them (nclab.data.noise)")
    kind: str = opt("symmetric", (str,), choices=("symmetric", "asymmetric"),
                    help="symmetric: a uniformly drawn other class; asymmetric: class c -> (c + 1) mod K")
    seed: int = opt(0, (int,), minimum=0, help="seed of which labels are changed (and, symmetric, to what)")


@dataclass(frozen=True)
class AugmentSpec(Section):
    crop: int = opt(0, (int,), minimum=0, help="random translate by up to this many pixels (reflect pad)")
    flip: bool = opt(False, (bool,))


@dataclass(frozen=True)
class DataSpec(Section):
    source: str = opt("synthetic", (str,), help="dataset spec for nclab.data.load_dataset")
    hierarchy: str | None = opt(None, (str,), nullable=True,
                                help="coarse-label spec (mod:K, cifar100, ...); null = dataset's own")
    labels: str = opt("fine", (str,), choices=("fine", "coarse"))
    subsample: Any = opt(None, (int, float, list, dict), nullable=True,
                         help="train subsample: ratio (float), per-class counts (list) or kwargs dict")
    limit_per_class: int | None = opt(None, (int,), nullable=True, minimum=1,
                                      help="keep the first n samples of each class in train AND test (tiny runs)")
    normalize: bool = opt(True, (bool,), help="standardise inputs with the train split's channel stats")
    image_size: int | None = opt(None, (int,), nullable=True, minimum=1,
                                 help="imagefolder sources: shorter side resized to this, then a centre square crop")
    label_noise: LabelNoiseSpec = section(LabelNoiseSpec)
    augment: AugmentSpec = section(AugmentSpec)


@dataclass(frozen=True)
class ModelSpec(Section):
    name: str = opt("mlp", (str,), choices=MODEL_NAMES)
    head_depth: int = opt(1, (int,), minimum=1)
    head_bias: bool = opt(True, (bool,))
    head_width: int | None = opt(None, (int,), nullable=True, minimum=1)
    # backbone-specific (passed only when set, i.e. not null)
    width: int | None = opt(None, (int,), nullable=True, minimum=1, help="mlp hidden width / resnet18 base width")
    depth: int | None = opt(None, (int,), nullable=True, minimum=0, help="mlp hidden layers")
    batchnorm: bool | None = opt(None, (bool,), nullable=True, help="mlp: BatchNorm after each hidden layer")
    widths: tuple | None = opt(None, (list,), nullable=True, help="fastnet group widths, 3 ints")
    act: str | None = opt(None, (str,), nullable=True, choices=("gelu", "relu"))
    whiten: bool | None = opt(None, (bool,), nullable=True, help="fastnet: data-whitened frozen stem")
    bn_momentum: float | None = opt(None, (float,), nullable=True, minimum=0, below=1,
                                    help="fastnet: BatchNorm momentum (PyTorch's convention: weight of the new batch)")
    scale: float | None = opt(None, (float,), nullable=True, minimum=1e-12,
                              help="fastnet: feature scale before the classifier")
    group_depth: int | None = opt(None, (int,), nullable=True, minimum=2,
                                  help="fastnet: convs per group (2 = airbench94's net, 3 = airbench96's)")

    def backbone_kwargs(self) -> dict[str, Any]:
        """The keys that are set (not null), without ``name``: what the model builder receives."""
        d = self.to_dict()
        d.pop("name")
        return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class OptimSpec(Section):
    name: str = opt("sgd", (str,), choices=("sgd", "adam", "adamw"))
    lr: float = opt(0.1, NUM, minimum=0)
    momentum: float = opt(0.9, NUM, minimum=0, below=1)
    nesterov: bool = opt(False, (bool,))
    weight_decay: float = opt(5e-4, NUM, minimum=0)
    betas: tuple = opt([0.9, 0.999], (list,), help="adam/adamw: two numbers in [0, 1)")
    bias_lr_scale: float = opt(1.0, NUM, minimum=0,
                               help="lr multiplier (and 1/x weight decay) for BatchNorm parameters")
    batch_size: int = opt(128, (int,), minimum=1)
    epochs: int = opt(10, (int,), minimum=1)
    stem_bias_epochs: int | None = opt(None, (int,), nullable=True, minimum=0,
                                       help="fastnet: train the whitening stem's bias for this many epochs, then "
                                            "freeze it (airbench's progressive freezing: the first conv then needs "
                                            "no input gradient); null = never freeze")
    lookahead_every: int | None = opt(None, (int,), nullable=True, minimum=1,
                                      help="every N steps pull the weights towards an exponential moving average of "
                                           "themselves and continue from it (airbench's lookahead); null = off")
    lookahead_decay: float = opt(0.95 ** 5, NUM, minimum=0, below=1,
                                 help="lookahead: the average's decay per sync at the end of training; it ramps "
                                      "up as (step/total)^3 so early training follows the raw weights "
                                      "(at 1 the weights would never move; airbench: 0.95**5 = 0.774)")


@dataclass(frozen=True)
class ScheduleSpec(Section):
    name: str = opt("multistep", (str,), choices=("multistep", "cosine", "onecycle", "constant"))
    milestones: tuple = opt([1 / 3, 2 / 3], (list,),
                            help="multistep: fractions of training (epochs), numbers in [0, 1]")
    gamma: float = opt(0.1, NUM, minimum=0)
    warmup: float = opt(0.0, NUM, minimum=0, below=1, help="fraction of steps with linear warm-up (all schedules)")
    start_factor: float = opt(0.0, NUM, minimum=0, help="warm-up starts at lr * start_factor")
    final_factor: float = opt(0.0, NUM, minimum=0, help="cosine/onecycle end at lr * final_factor")


@dataclass(frozen=True)
class LossSpec(Section):
    name: str = opt("ce", (str,), choices=("ce", "mse"))
    label_smoothing: float = opt(0.0, NUM, minimum=0, below=1, help="ce only: targets (1 - e) onehot + e / K")
    lambda_w: float = opt(0.0, NUM, minimum=0,
                          help="explicit penalty lambda_w/2 * sum_l ||W_l||_F^2 on head weights")
    lambda_h: float = opt(0.0, NUM, minimum=0,
                          help="explicit penalty lambda_h/2 * mean_i ||h_i||^2 on head.0 features")


@dataclass(frozen=True)
class TrainSpec(Section):
    device: str = opt("auto", (str,), choices=("auto", "cpu", "cuda"))
    bf16: bool = opt(True, (bool,), help="bf16 autocast (CPU with AVX-512 bf16, CUDA)")
    channels_last: bool = opt(True, (bool,))
    compile: bool | str = opt(False, (bool, str), choices=COMPILE_MODES,
                              help="torch.compile the forward pass: false, true (= default), or a torch.compile mode "
                                   "(reduce-overhead adds CUDA graphs)")
    threads: int | None = opt(None, (int,), nullable=True, minimum=1, help="torch CPU threads (null = torch default)")
    tta: str = opt("none", (str,), choices=("none", "flip"),
                   help="test-time augmentation for evaluation and recovery features: flip = mean of the "
                        "penultimate features of x and its mirror image (logits follow, the classifier is linear)")
    time_limit_s: float | None = opt(None, NUM, nullable=True, minimum=0,
                                     help="pause cleanly (checkpoint, status 'paused', exit code 75) at the first "
                                          "epoch end after which another epoch would pass this many seconds since "
                                          "the nclab command started (Python API: since the Trainer was built); "
                                          "continue with --resume. At least one epoch runs per call")
    checkpoint_every: int = opt(1, (int,), minimum=1)
    keep_checkpoints: bool = opt(False, (bool,), help="also keep checkpoints/epoch_XXXX.pt")
    eval_every: int = opt(1, (int,), minimum=1)
    eval_batch_size: int = opt(1024, (int,), minimum=1)
    sync_bn: bool = opt(False, (bool,), help="under torchrun: SyncBatchNorm, BatchNorm statistics over the global "
                                             "batch (CUDA only; without it each rank normalises its own shard)")
    dist_timeout_s: float = opt(300.0, NUM, minimum=1e-3,
                                help="under torchrun: seconds a collective waits for the other ranks before this "
                                     "rank stops with an error (a rank that died or hangs); ignored in one process")
    loggers: Any = opt(None, (list, dict), nullable=True,
                       help="export every metrics row: a list of tensorboard, mlflow, wandb, or {kind: {options}} "
                            "(nclab.train.loggers; each needs its pip extra, e.g. pip install nclab[tensorboard])")


# the run's fine-label recovery settings, recorded once: the final recovery, the recovery callback (unless
# callbacks.recovery overrides a key), `nclab recover --run` and the report read them (nclab.contracts.recovery)
RECOVERY_SCHEMA = {p.name: Opt(p.default, (int, float) if p.kind is float else (p.kind,), choices=p.choices,
                               nullable=p.nullable, minimum=p.low, help=p.help) for p in RECOVERY_PARAMS}


@dataclass(frozen=True)
class Config(Section):
    """A validated training config (built by :func:`load_config` alone; frozen: derive changed copies with
    :meth:`replace` or :meth:`with_overrides`). ``to_dict()`` is what the run's config.yaml holds."""

    name: str = opt("run", (str,), help="run name: the run directory is runs/<name>/ (one folder name, no '/')")
    seed: int = opt(0, (int,), minimum=0)
    data: DataSpec = section(DataSpec)
    model: ModelSpec = section(ModelSpec)
    optim: OptimSpec = section(OptimSpec)
    schedule: ScheduleSpec = section(ScheduleSpec)
    loss: LossSpec = section(LossSpec)
    train: TrainSpec = section(TrainSpec)
    recovery: RecoverySpec = field(default_factory=RecoverySpec, metadata={
        "schema": RECOVERY_SCHEMA, "build": lambda d: RecoverySpec.from_mapping(d, "config key recovery")})
    callbacks: dict = opt({}, (dict,), help="NAME: {kwargs} or dotted.path:Class: {kwargs}")

    def with_overrides(self, overrides: list[str]) -> "Config":
        """A copy with ``--set``-style ``key=value`` overrides applied (validated as load_config does)."""
        return load_config(self.to_dict(), overrides)

    def replace(self, **changes: Any) -> "Config":
        """A copy with the fields in ``changes`` replaced, validated as load_config does:
        ``cfg.replace(callbacks={}, train=cfg.train.replace(device="cpu"))``."""
        return load_config({**self.to_dict(), **_plain(changes)})


SCHEMA: dict[str, Any] = Config.schema()


def option(key: str) -> Opt:
    """The :class:`Opt` of a dotted config key (``option("train.device").choices``): command-line flags that
    mirror a config key take their choices, default and help from it."""
    node: Any = SCHEMA
    for part in key.split("."):
        node = node[part]
    return node


def defaults(schema: dict = SCHEMA) -> dict:
    return {k: (defaults(v) if isinstance(v, dict) else copy.deepcopy(v.default)) for k, v in schema.items()}


def _check(cfg: dict, schema: dict, prefix: str = "") -> dict:
    if not isinstance(cfg, dict):
        raise NclabError(f"config section {prefix.rstrip('.') or '<root>'} must be a mapping, got {cfg!r}")
    out = {}
    for k, v in cfg.items():
        key = prefix + str(k)
        if k not in schema:
            close = difflib.get_close_matches(str(k), list(schema), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else \
                f"; valid keys here: {', '.join(prefix + c for c in schema)}"
            raise NclabError(f"unknown config key {key}{hint}")
        spec = schema[k]
        out[k] = _check(v if v is not None else {}, spec, key + ".") if isinstance(spec, dict) else spec.check(key, v)
    for k, spec in schema.items():
        if k not in out:
            out[k] = defaults(spec) if isinstance(spec, dict) else copy.deepcopy(spec.default)
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def configs_dir() -> Path:
    """Folder of the configs shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "configs"


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


def resolve_config_path(spec: str | os.PathLike) -> Path:
    """A path, or a bare name of a shipped config (``fast`` -> nclab/configs/fast.yaml)."""
    p = Path(spec)
    if p.is_file():
        return p
    s = str(spec)
    if p.is_dir() and ("/" in s or os.sep in s or not (configs_dir() / f"{s}.yaml").exists()):
        raise NclabError(f"config {p} is a folder; pass a YAML file or a shipped config name")
    if "/" not in s and os.sep not in s:  # a bare name: a shipped config (also when a folder here has that name)
        cand = configs_dir() / (s if s.endswith((".yaml", ".yml")) else s + ".yaml")
        if cand.exists():
            return cand
    names = shipped_configs()
    close = difflib.get_close_matches(Path(s).stem, names, n=2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise NclabError(f"config {s} not found{hint}; pass a YAML path or a shipped name: {', '.join(names)}")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], yaml-parsed value)."""
    if "=" not in item:
        raise NclabError(f"--set {item!r} needs the form key=value, e.g. optim.lr=0.05")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise NclabError(f"--set {item!r} has an empty key; use e.g. optim.lr=0.05")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _saved_run_fixups(raw: dict) -> None:
    """A run's saved config.yaml may predate a rule; keep such runs resumable and measurable when the rule changed
    nothing they computed: model.head_width with head_depth 1 is an error, but a one-layer head always ignored
    it, and runs saved before the rule (dln-cifar10-imbalanced's M = 1 sub-runs) still carry it."""
    m = raw.get("model")
    if isinstance(m, dict) and m.get("head_width") is not None and m.get("head_depth", 1) == 1:
        m["head_width"] = None


def load_config(source: str | os.PathLike | dict | Config | None = None,
                overrides: list[str] | None = None) -> Config:
    """Load (YAML path, shipped name, mapping, or a :class:`Config`), apply ``key=value`` overrides, validate, fill
    defaults: the one place a config is parsed; everything downstream takes the frozen :class:`Config`."""
    if isinstance(source, Config):
        if not overrides:
            return source
        source = source.to_dict()
    if source is None:
        raw: dict = {}
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        path = resolve_config_path(source)
        try:
            raw = safe_load_unique(path.read_text())
        except UnicodeDecodeError:
            raise NclabError(f"{path} is not UTF-8 text; pass a YAML config file") from None
        except DuplicateKeyError as e:
            raise NclabError(f"{path}: {e.problem}; keep one of them") from None
        except yaml.YAMLError as e:
            raise NclabError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); fix the file")
        if raw is None:  # an empty file is a mistake more often than a wish for every default
            raise NclabError(f"{path} is empty; write the config sections (see `nclab train --config tiny`, "
                             "shipped in nclab/configs/tiny.yaml), or pass no "
                             "config to use the defaults")
        if not isinstance(raw, dict):
            raise NclabError(f"{path} must hold a mapping of config sections, got {type(raw).__name__}")
        if (path.parent / "checkpoints").is_dir():
            _saved_run_fixups(raw)
    cfg = _check(raw, SCHEMA)  # validate the file first: its errors name its own keys
    for item in overrides or []:
        keys, value = parse_override(item)
        node: dict = {}
        cur = node
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
        cur[keys[-1]] = value
        # free-form sections (callbacks, data.subsample) take nested overrides as-is
        cfg = _check(_merge(cfg, node), SCHEMA)
    _cross_check(cfg)
    return Config.from_checked(cfg)


def config_diff(old: dict | Config, new: dict | Config, ignore: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """Sorted dotted keys present in both configs whose values differ (nested sections recursed; ``ignore``:
    dotted keys left out). A key only one side has (one added or dropped by an upgrade) is not a difference."""
    old, new = (c.to_dict() if isinstance(c, Config) else c for c in (old, new))
    out = []
    for k in sorted(set(old) & set(new)):
        key, a, b = f"{prefix}{k}", old[k], new[k]
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, ignore, key + ".")
        elif a != b and key not in ignore:
            out.append(key)
    return out


def check_run_name(name: str) -> str:
    """A run name is one folder name under --runs (no path separators, not empty, not . or ..)."""
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or os.sep in name:
        raise NclabError(f"run name {name!r} must be one folder name (no '/', not empty, not '.' or '..'); use "
                         "--run-dir PATH for an exact location")
    return name


def _numbers(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cross_check(cfg: dict) -> None:
    """Checks a single key's schema cannot express (list contents, keys that depend on each other)."""
    ms = cfg["schedule"]["milestones"]
    if not all(_numbers(m) and 0 <= m <= 1 for m in ms):
        raise NclabError(f"config key schedule.milestones={ms!r} must be a list of fractions of training in [0, 1], "
                         "e.g. [0.333, 0.667]")
    betas = cfg["optim"]["betas"]
    if len(betas) != 2 or not all(_numbers(b) and 0 <= b < 1 for b in betas):
        raise NclabError(f"config key optim.betas={betas!r} must be two numbers in [0, 1), e.g. [0.9, 0.999]")
    cfg["recovery"] = RecoverySpec.from_mapping(cfg["recovery"], "config key recovery").to_dict()
    if cfg["loss"]["name"] == "mse" and cfg["loss"]["label_smoothing"]:
        raise NclabError("config key loss.label_smoothing applies to loss.name=ce only; set it to 0 with mse")
    # the source's name is checked here, not when the data loads: a sweep or reproduce that would only learn of a
    # typo after creating its folders (a sweep left one marked "failed") refuses before writing anything
    from nclab.data.load import parse_spec

    try:
        parse_spec(cfg["data"]["source"])
    except NclabError as e:
        raise NclabError(f"config key data.source: {e}") from None
    if cfg["model"].get("head_width") is not None and cfg["model"].get("head_depth", 1) == 1:
        # a one-layer head has no hidden layer whose width this could set: silently ignoring it would hide a typo
        raise NclabError("config key model.head_width sets the hidden layers of a deep-linear head and needs "
                         "model.head_depth >= 2; set model.head_depth or drop model.head_width")
