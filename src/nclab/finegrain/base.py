"""scikit-learn's estimator conventions for the estimators of :mod:`nclab.finegrain`, without depending on it.

- ``__init__`` only stores its arguments, as attributes of the same names (no validation, no derived state);
- ``fit`` validates them against the estimator's one declarative table ``_parameter_constraints`` (parameter
  name -> :class:`nclab.contracts.recovery.Param`: type, allowed values or interval, default) and raises
  :class:`InvalidParameterError` naming the parameter, the allowed values and the default;
- :meth:`EstimatorMixin.get_params` / :meth:`EstimatorMixin.set_params` are derived from the ``__init__``
  signature, as in ``sklearn.base.BaseEstimator``; :func:`clone` makes a new unfitted estimator with the same
  parameters; ``repr`` shows the parameters that differ from their defaults;
- fitted attributes end with an underscore, and a method that needs them raises :class:`NotFittedError`
  before ``fit``.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
from typing import Any, ClassVar, Mapping

import numpy as np

from nclab.contracts.recovery import Param
from nclab.utils.errors import NclabError

__all__ = ["EstimatorMixin", "NotFittedError", "InvalidParameterError", "clone", "check_param"]


class NotFittedError(NclabError, ValueError, AttributeError):
    """A method that needs the fitted state was called before ``fit`` (as ``sklearn.exceptions.NotFittedError``,
    also a ValueError and an AttributeError, so ``hasattr(est, "groups_")``-style checks keep working)."""


class InvalidParameterError(NclabError, ValueError):
    """An estimator parameter outside its domain, found by ``fit`` (also a ValueError, as scikit-learn's)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def allowed(p: Param) -> str:
    """The domain of ``p`` in words, for estimator messages: "a positive integer", "a number in (0, 1]",
    "one of a, b, c", "True or False" (" or None" when it is nullable)."""
    if p.choices:
        s = "one of " + ", ".join(map(str, p.choices))
    elif p.kind is bool:
        s = "True or False"
    elif p.kind is int and p.high is None and p.low in (0, 1):
        s = "a non-negative integer" if p.low == 0 else "a positive integer"
    elif p.kind is int and p.high is None and p.low is not None:
        s = f"an integer >= {_fmt(p.low)}"
    elif p.kind in (int, float) and (p.low is not None or p.high is not None):
        lo = "-inf" if p.low is None else _fmt(p.low)
        hi = "inf" if p.high is None else _fmt(p.high)
        s = f"{'an integer' if p.kind is int else 'a number'} in {'(' if p.low_open or p.low is None else '['}{lo}, " \
            f"{hi}{')' if p.high is None else ']'}"
    elif p.kind is int:
        s = "an integer"
    elif p.kind is float:
        s = "a number"
    else:
        s = f"a {p.kind.__name__}"
    return s + (" or None" if p.nullable else "")


def check_param(p: Param, value: Any, owner: str) -> None:
    """Raise :class:`InvalidParameterError` unless ``value`` is in the domain of ``p`` (``owner``: the estimator's
    class name, for the message). Numpy scalars count as their Python kinds; a ``kind`` of ``object`` is not
    checked here (the estimator checks such a parameter itself)."""
    if p.kind is object or (value is None and p.nullable):
        return
    fix = f"pass e.g. {p.name}={p.default!r} (the default)"
    if p.choices:
        if isinstance(value, p.kind) and value in p.choices:
            return
        what = f"{p.noun} {value!r} for parameter {p.name}" if p.noun else f"{p.name} {value!r}"
        raise InvalidParameterError(f"{owner}: unknown {what}; use {allowed(p)} (default {p.default!r})")
    if p.kind is bool:
        ok = isinstance(value, (bool, np.bool_))
    elif p.kind is int:
        ok = _is_int(value)
    elif p.kind is float:
        ok = _is_number(value) and math.isfinite(float(value))
    else:
        ok = isinstance(value, p.kind)
    if ok and p.kind in (int, float):
        v = float(value)
        ok = (p.low is None or v > p.low or (v == p.low and not p.low_open)) and (p.high is None or v <= p.high)
    if not ok:
        raise InvalidParameterError(f"{owner}: {p.name} must be {allowed(p)}, got {value!r}; {fix}")


def _differs(value: Any, default: Any) -> bool:
    """Whether a parameter value is not its default (arrays and objects without a plain ``==`` count as set)."""
    if value is default:
        return False
    try:
        return not bool(value == default)
    except Exception:  # arrays, dataclasses holding arrays: ambiguous truth value
        return True


def _short_repr(value: Any, limit: int = 60) -> str:
    r = repr(value).replace("\n", " ")
    return r if len(r) <= limit else r[: limit - 3] + "..."


class EstimatorMixin:
    """``get_params`` / ``set_params`` / ``repr`` / parameter validation / the not-fitted check (module
    docstring). A subclass defines ``_parameter_constraints`` (one :class:`Param` per ``__init__`` parameter)
    and ``_fit_call`` (how to call its ``fit``, for the not-fitted message)."""

    _parameter_constraints: ClassVar[Mapping[str, Param]] = {}
    _fit_call: ClassVar[str] = "fit(...)"

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The ``__init__`` parameters (sorted like scikit-learn's); ``*args``/``**kwargs`` are not allowed."""
        init = cls.__init__
        if init is object.__init__:
            return []
        params = [p for p in inspect.signature(init).parameters.values() if p.name != "self"]
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must name its parameters (no *args/**kwargs): {p}")
        return sorted(p.name for p in params)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The ``__init__`` parameters -> their current values. ``deep``: also ``name__sub`` of parameters that
        are estimators themselves (none here yet; as scikit-learn)."""
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params: Any) -> "EstimatorMixin":
        """Set ``__init__`` parameters (``name__sub`` for a nested estimator's); checked by the next ``fit``, which
        they change. Returns ``self``. An unknown name raises :class:`InvalidParameterError`."""
        valid = self._get_param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise InvalidParameterError(f"{type(self).__name__} has no parameter {name!r}; valid parameters: "
                                            f"{', '.join(valid)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub in nested.items():
            getattr(self, name).set_params(**sub)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__).parameters
        shown = [f"{k}={_short_repr(v)}" for k, v in self.get_params(deep=False).items()
                 if _differs(v, sig[k].default)]
        return f"{type(self).__name__}({', '.join(shown)})"

    def _validate_params(self) -> None:
        """Check every ``__init__`` parameter against ``_parameter_constraints`` (called first thing in ``fit``)."""
        names = self._get_param_names()
        missing = sorted(set(names) - set(self._parameter_constraints))
        if missing:  # a programming error: each parameter has exactly one row
            raise TypeError(f"{type(self).__name__}._parameter_constraints lacks {', '.join(missing)}")
        for name in names:
            check_param(self._parameter_constraints[name], getattr(self, name), type(self).__name__)

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted when ``fit`` has set a public attribute ending in ``_`` (scikit-learn's own rule)."""
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def _check_fitted(self, what: str) -> None:
        """:class:`NotFittedError` naming ``what`` (e.g. "predict called") unless the estimator is fitted."""
        if not self.__sklearn_is_fitted__():
            name = type(self).__name__
            raise NotFittedError(f"{name} is not fitted yet ({what} before fit); call {self._fit_call} first")


def clone(estimator: EstimatorMixin) -> EstimatorMixin:
    """A new unfitted estimator of the same class with the same parameters (estimator-valued parameters cloned,
    the others deep-copied), as ``sklearn.base.clone``."""
    if not hasattr(estimator, "get_params") or isinstance(estimator, type):
        raise NclabError(f"clone needs an estimator instance (with get_params), got {estimator!r}")
    params = {k: clone(v) if hasattr(v, "get_params") and not isinstance(v, type) else copy.deepcopy(v)
              for k, v in estimator.get_params(deep=False).items()}
    new = type(estimator)(**params)
    got = new.get_params(deep=False)
    for k, v in params.items():  # __init__ must store its arguments as given
        if got[k] is not v:
            raise TypeError(f"{type(estimator).__name__}.__init__ changed parameter {k} instead of storing it")
    return new
