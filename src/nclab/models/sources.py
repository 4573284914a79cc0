"""Model sources: one spec syntax for any network, used by ``nclab probe``, configs and ``nclab.probe``.

=========================  ==========================================================================
``torchvision:NAME``       ``torchvision.models.get_model(NAME, weights=None)`` (random init; extra ``vision``)
``timm:NAME``              ``timm.create_model(NAME, pretrained=False)`` (extra ``vision``)
``hf:NAME_OR_PATH``        Hugging Face ``transformers``, local files / the user's cache only (extra ``hf``):
                           causal language models via ``AutoModelForCausalLM``, anything else via ``AutoModel``
``python:FILE.py:FACTORY`` ``FACTORY()`` from that file, returning an ``nn.Module``
``torchscript:FILE.pt``    ``torch.jit.load(FILE)`` (only its output can be probed: hooks do not run in scripts)
``run:RUN_DIR``            the last checkpoint of a run trained by nclab
=========================  ==========================================================================

``weights=PATH`` loads a state dict into the built model (``torch.load(weights_only=True)``, or safetensors
when the file is one); a dict holding ``"model"`` or ``"state_dict"`` is unwrapped. nclab never downloads:
weights come from local files or the libraries' own caches (``local_files_only=True`` for ``hf:``).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Any

import torch
from torch import nn

from nclab.utils.errors import NclabError

FAMILIES = ("torchvision", "timm", "hf", "python", "torchscript", "run")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTRA = {"torchvision": "vision", "timm": "vision", "transformers": "hf", "safetensors": "hf"}


@dataclass
class LoadedModel:
    """A model from a spec and how to feed it.

    ``kind``: ``"vision"`` (images (N, C, H, W) float, normalised by ``mean``/``std`` on the 0..1 scale and
    resized to ``image_size`` when set), ``"features"`` (float (N, D) as they are), or ``"causal_lm"``
    (token ids (N, T), features taken per token). ``preprocess`` names where mean/std/size came from.
    """

    module: nn.Module
    spec: str
    family: str
    kind: str = "vision"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: int | None = None
    preprocess: str = "defaults"
    input_shape: tuple[int, ...] | None = None  # one sample, for the dummy forward of --list-layers
    tokenizer: Any = None
    info: dict = field(default_factory=dict)


def _import(lib: str):
    """Import an optional library or say which extra installs it (a broken install is reported too)."""
    try:
        return importlib.import_module(lib)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == lib.split(".")[0]:
            raise NclabError(f"{lib} is not installed; install the extra: "
                             f"pip install 'nclab[{EXTRA.get(lib.split('.')[0], 'vision')}]'") from None
        raise NclabError(f"{lib} cannot be imported ({e}); install a version matching torch "
                         f"{torch.__version__}: "
                         f"pip install 'nclab[{EXTRA.get(lib.split('.')[0], 'vision')}]'") from None
    except Exception as e:  # e.g. torchvision built for another torch: "operator torchvision::nms does not exist"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NclabError(f"{lib} is installed but cannot be imported ({first}); install a build matching torch "
                         f"{torch.__version__}: "
                         f"pip install 'nclab[{EXTRA.get(lib.split('.')[0], 'vision')}]'") from None


def parse_spec(spec: str) -> tuple[str, str]:
    """``"family:rest"`` -> ``(family, rest)``; an unknown family is an error listing the known ones."""
    if not isinstance(spec, str) or ":" not in spec:
        raise NclabError(f"model spec {spec!r} needs a library prefix: one of "
                         f"{', '.join(f + ':' for f in FAMILIES)} (e.g. torchvision:resnet18)")
    fam, rest = spec.split(":", 1)
    if fam not in FAMILIES:
        raise NclabError(f"unknown model library {fam!r} in {spec!r}; "
                         f"use one of {', '.join(f + ':' for f in FAMILIES)}")
    if not rest:
        raise NclabError(f"model spec {spec!r} names no model after {fam}:")
    return fam, rest


def load_model(spec: str, *, weights: str | Path | None = None, num_classes: int | None = None) -> LoadedModel:
    """Build the model named by ``spec`` (see module docstring), in eval mode on the CPU."""
    fam, rest = parse_spec(spec)
    lm = {"torchvision": _torchvision, "timm": _timm, "hf": _hf, "python": _python, "torchscript": _torchscript,
          "run": _run}[fam](rest, num_classes)
    lm.spec, lm.family = spec, fam
    if weights is not None:
        load_weights(lm.module, weights)
        lm.info["weights"] = str(weights)
    lm.module.eval()
    return lm


# weights ----------------------------------------------------------------------------------------
def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length and then a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``torch.save`` file (``weights_only=True``) or a safetensors file."""
    p = Path(path)
    if not p.is_file():
        raise NclabError(f"weights file {p} does not exist; pass a saved state dict (.pt/.pth/.safetensors)")
    if p.suffix == ".safetensors" or _is_safetensors(p):
        st = _import("safetensors.torch")
        try:
            return dict(st.load_file(str(p)))
        except Exception as e:
            raise NclabError(f"weights file {p} is not a readable safetensors file ({type(e).__name__}); "
                             "re-save it") from None
    from nclab.utils.io import torch_load

    try:
        obj = torch_load(p)
    except Exception as e:
        raise NclabError(f"weights file {p} cannot be read with weights_only=True ({type(e).__name__}); save "
                         "model.state_dict() with torch.save") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise NclabError(f"weights file {p} holds no state dict of tensors; save model.state_dict() with torch.save")
    return obj


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a state dict into ``module`` strictly; another architecture's weights are one clear error."""
    sd = read_state_dict(path)
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        lines = [s.strip() for s in str(e).strip().splitlines() if s.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "keys differ"
        raise NclabError(f"weights {path} are for another architecture than the model spec ({detail[:200]}); "
                         "pass the weights saved from this model") from None


# families ---------------------------------------------------------------------------------------
def _torchvision(name: str, num_classes: int | None) -> LoadedModel:
    tv = _import("torchvision")
    models = _import("torchvision.models")
    try:
        kw = {} if num_classes is None else {"num_classes": int(num_classes)}
        module = models.get_model(name, weights=None, **kw)
    except (ValueError, KeyError):
        raise NclabError(f"torchvision has no model {name!r}; see torchvision.models.list_models()") from None
    mean, std, size, how = IMAGENET_MEAN, IMAGENET_STD, 224, "defaults (ImageNet mean/std, 224 px)"
    try:  # the weights' own transforms (metadata only: nothing is downloaded)
        t = models.get_model_weights(name).DEFAULT.transforms()
        mean, std = tuple(t.mean), tuple(t.std)
        size = int(t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size)
        how = "torchvision weights' transforms"
    except Exception:
        pass
    return LoadedModel(module, "", "torchvision", mean=mean, std=std, image_size=size, preprocess=how,
                       input_shape=(3, size, size), info={"torchvision": tv.__version__})


def _timm(name: str, num_classes: int | None) -> LoadedModel:
    timm = _import("timm")
    try:
        kw = {} if num_classes is None else {"num_classes": int(num_classes)}
        module = timm.create_model(name, pretrained=False, **kw)
    except RuntimeError as e:
        raise NclabError(f"timm has no model {name!r} ({str(e)[:120]}); see timm.list_models()") from None
    cfg = timm.data.resolve_data_config({}, model=module)
    c, h, w = cfg["input_size"]
    return LoadedModel(module, "", "timm", mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), image_size=int(h),
                       preprocess="timm data config", input_shape=(int(c), int(h), int(w)),
                       info={"timm": timm.__version__})


def _hf(name: str, num_classes: int | None) -> LoadedModel:
    tr = _import("transformers")
    try:
        cfg = tr.AutoConfig.from_pretrained(name, local_files_only=True)
    except Exception as e:
        raise NclabError(f"no Hugging Face model at {name!r} in local files or the cache ({type(e).__name__}); "
                         "pass a folder with config.json (nclab never downloads)") from None
    archs = list(getattr(cfg, "architectures", None) or [])
    causal = any(a.endswith("LMHeadModel") or a.endswith("ForCausalLM") for a in archs) or (
        not archs and type(cfg).__name__ in ("GPT2Config", "LlamaConfig", "GPTNeoXConfig"))
    auto = tr.AutoModelForCausalLM if causal else tr.AutoModel
    try:
        module = auto.from_pretrained(name, local_files_only=True)
    except Exception as e:
        raise NclabError(f"cannot load the Hugging Face model at {name!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:150] if str(e) else ''}); check the folder's weights") from None
    tok = None
    if causal:
        try:
            tok = tr.AutoTokenizer.from_pretrained(name, local_files_only=True)
        except Exception:
            tok = None  # token-id input still works; --text needs a tokenizer (said where it is used)
        return LoadedModel(module, "", "hf", kind="causal_lm", tokenizer=tok, preprocess="tokenizer",
                           input_shape=(16,), info={"transformers": tr.__version__, "vocab_size": int(cfg.vocab_size)})
    size = getattr(cfg, "image_size", 224)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    mean, std, how = IMAGENET_MEAN, IMAGENET_STD, "defaults (ImageNet mean/std, config image_size)"
    try:
        proc = tr.AutoImageProcessor.from_pretrained(name, local_files_only=True)
        mean, std, how = tuple(proc.image_mean), tuple(proc.image_std), "image processor"
    except Exception:
        pass
    ch = int(getattr(cfg, "num_channels", 3))
    if len(mean) != ch:  # ImageNet statistics are for RGB; another channel count gets the 0.5/0.5 default
        mean, std, how = (0.5,) * ch, (0.5,) * ch, "defaults (0.5/0.5 per channel, config image_size)"
    return LoadedModel(_PixelValues(module), "", "hf", mean=mean, std=std, image_size=size, preprocess=how,
                       input_shape=(ch, size, size), info={"transformers": tr.__version__})


class _PixelValues(nn.Module):
    """``model(x)`` for a Hugging Face vision model that takes ``pixel_values=``; its modules are under
    ``model.`` (so layer names read ``model.encoder.layer.0``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model(pixel_values=x)


def _python(rest: str, num_classes: int | None) -> LoadedModel:
    path, _, factory = rest.rpartition(":")
    if not path or not factory:
        raise NclabError(f"python:{rest} must read python:FILE.py:FACTORY (a function returning an nn.Module)")
    p = Path(path)
    if not p.is_file():
        raise NclabError(f"python model file {p} does not exist; pass python:FILE.py:FACTORY")
    spec = importlib.util.spec_from_file_location(f"nclab_user_model_{p.stem}", p)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        raise NclabError(f"importing {p} failed ({type(e).__name__}: {e}); fix the file") from None
    fn = getattr(mod, factory, None)
    if not callable(fn):
        raise NclabError(f"{p} has no function {factory!r}; pass python:FILE.py:FACTORY")
    module = fn()
    if not isinstance(module, nn.Module):
        raise NclabError(f"{p}:{factory}() returned {type(module).__name__}, not a torch nn.Module")
    shape = getattr(module, "input_shape", None)
    return LoadedModel(module, "", "python", kind="vision" if shape is None or len(shape) == 3 else "features",
                       input_shape=None if shape is None else tuple(int(s) for s in shape), preprocess="none")


def _torchscript(path: str, num_classes: int | None) -> LoadedModel:
    p = Path(path)
    if not p.is_file():
        raise NclabError(f"TorchScript file {p} does not exist; save one with torch.jit.save")
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        raise NclabError(f"{p} is not a readable TorchScript file ({type(e).__name__}); "
                         "save it with torch.jit.save") from None
    return LoadedModel(_Scripted(module), "", "torchscript", preprocess="none")


class _Scripted(nn.Module):
    """A TorchScript module behind one eager ``output`` module, so its output can be hooked as layer ``output``
    (hooks on a script's own submodules never run)."""

    def __init__(self, script):
        super().__init__()
        self.output = _Call(script)

    def forward(self, x):
        return self.output(x)


class _Call(nn.Module):
    def __init__(self, script):
        super().__init__()
        self.script = script

    def forward(self, x):
        return self.script(x)

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        yield prefix, self  # the script's internals are not hookable: hide them from layer listings


# Sources that need layers above this one register their loader here (``run:`` needs the trainer to rebuild a
# run's model and normalisation: nclab.experiments registers it on import).
LOADERS: dict[str, Callable[[str, int | None], LoadedModel]] = {}


def register_loader(family: str, loader: Callable[[str, int | None], LoadedModel]) -> None:
    """Make ``family:`` specs load with ``loader(rest, num_classes)`` (``family`` must be in FAMILIES)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}")
    LOADERS[family] = loader


def _run(path: str, num_classes: int | None) -> LoadedModel:
    if "run" not in LOADERS:
        raise NclabError("run: model specs are loaded by nclab.experiments (it rebuilds the run's model and "
                         "normalisation with the trainer); import nclab.experiments first, or use nclab.probe")
    return LOADERS["run"](path, num_classes)


__all__ = ["LoadedModel", "load_model", "load_weights", "read_state_dict", "parse_spec", "FAMILIES", "register_loader"]
