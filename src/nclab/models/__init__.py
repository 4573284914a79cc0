"""Model registry: ``build_model(name, num_classes, input_shape, **kw)``.

Every model is an :class:`nclab.models.base.NCModel`: ``features(x)`` (N, D) = input of the last
linear layer, ``classifier`` (that ``nn.Linear``), ``forward(x) == classifier(features(x))``,
``head_layers`` (M linear layers), ``tap_names()`` and ``forward_taps(x, names)``.
Models with a data-dependent init (fastnet's whitening stem) expose ``model.data_init(x)``.
"""

from __future__ import annotations

import difflib
import inspect
from functools import partial

import numpy as np

from nclab.models.base import NCModel, flip_mean_features
from nclab.models.fastnet import fastnet_data_init, fastnet_stages
from nclab.models.mlp import mlp_stages
from nclab.models.resnet import resnet18_stages
from nclab.models.vgg import vgg_stages
from nclab.utils.errors import NclabError

HEAD_KWARGS = ("head_depth", "head_bias", "head_width")


def _image_ch(name: str, input_shape: tuple) -> int:
    if len(input_shape) != 3:
        raise NclabError(f"model {name} needs image input (C, H, W), got shape {tuple(input_shape)}; "
                         "use model.name: mlp")
    return int(input_shape[0])


def _resnet18(input_shape, width: int = 64):
    return resnet18_stages(_image_ch("resnet18", input_shape), width)


def _fastnet(input_shape, widths=(64, 256, 256), act: str = "gelu", whiten: bool = True,
             bn_momentum: float = 0.4, scale: float = 1 / 9, group_depth: int = 2):
    ch = _image_ch("fastnet", input_shape)
    if min(input_shape[1:]) < 9:  # 2x2 stem (-1 px), then three 2x2 max-pools must leave >= 1 pixel
        raise NclabError(f"fastnet needs images of at least 9x9 pixels, got {input_shape[1]}x{input_shape[2]}; "
                         "use a larger data.image_size or model.name: resnet18 / vgg11 / mlp")
    return fastnet_stages(ch, widths, act, whiten, bn_momentum, scale, group_depth)


def _vgg(name, input_shape):
    return vgg_stages(name, _image_ch(name, input_shape))


def _mlp(input_shape, width: int = 512, depth: int = 3, batchnorm: bool = False):
    return mlp_stages(tuple(input_shape), width, depth, batchnorm)


def _linear(input_shape):
    return mlp_stages(tuple(input_shape), 0, 0, False)


BUILDERS = {
    "resnet18": _resnet18,
    "fastnet": _fastnet,
    "vgg11": partial(_vgg, "vgg11"),
    "vgg16": partial(_vgg, "vgg16"),
    "mlp": _mlp,
    "linear": _linear,
}
MODEL_NAMES = tuple(BUILDERS)


def model_kwargs(name: str) -> list[str]:
    """Backbone keyword arguments a model accepts (besides the head ones)."""
    fn = BUILDERS[name]
    params = inspect.signature(fn).parameters
    return [p for p in params if p != "input_shape"]


def build_model(name: str, num_classes: int, input_shape: tuple, **kw) -> NCModel:
    """Build model ``name`` for ``num_classes`` outputs and per-sample ``input_shape``.

    Head kwargs (all models): ``head_depth`` M (M-1 bias-free hidden linear layers + classifier),
    ``head_bias`` (classifier bias), ``head_width`` (hidden head width; default = backbone dim).
    """
    if name not in BUILDERS:
        close = difflib.get_close_matches(str(name), MODEL_NAMES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise NclabError(f"unknown model {name!r}{hint}; choose one of {', '.join(MODEL_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise NclabError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(input_shape, (int, np.integer)) or not all(isinstance(d, (int, np.integer)) and d > 0
                                                             for d in tuple(input_shape)):
        raise NclabError(f"input_shape must be a tuple of positive ints per sample, e.g. (3, 32, 32) or (20,), "
                         f"got {input_shape!r}")
    head = {k: kw.pop(k) for k in HEAD_KWARGS if k in kw}
    allowed = model_kwargs(name)
    bad = [k for k in kw if k not in allowed]
    if bad:
        raise NclabError(f"model {name} does not take {', '.join(bad)}; "
                         f"it takes {', '.join(allowed + list(HEAD_KWARGS))}")
    stages, dim = BUILDERS[name](tuple(input_shape), **kw)
    model = NCModel(stages, dim, num_classes, **head)
    model.model_name = name
    if name == "fastnet":
        model.data_init = partial(fastnet_data_init, model)
    return model


__all__ = ["build_model", "NCModel", "MODEL_NAMES", "model_kwargs", "flip_mean_features"]
