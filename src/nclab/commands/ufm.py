"""``nclab ufm predict|solve``: the deep linear unconstrained-features model, closed form and numerical.

    nclab ufm predict --counts 200,100,50,50 --depth 3 --lambda-w 5e-4 --lambda-h 5e-4 [--bias] --json
    nclab ufm solve   --counts 200,100,50,50 --depth 3 [--optimizer gd|lbfgs --iters 20000 --width 32] --json
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from nclab.commands import missing_subcommand
from nclab.utils.errors import NclabError
from nclab.utils.io import json_clean as _clean

_COLS = ("x", "sigma2", "w_norm2", "h_norm2", "w_dot_h")


def _floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise NclabError(f"{what} must be a number or a comma list of numbers, got {text!r}") from None
    if not vals:
        raise NclabError(f"{what} is empty; give a number or a comma list")
    return vals


def _counts(text: str) -> list[int]:
    vals = _floats(text, "--counts")
    if not all(math.isfinite(v) and abs(v) <= 1e12 for v in vals):
        raise NclabError(f"--counts must be finite sample counts (at most 1e12 per class), got {text!r}")
    if any(v != int(v) for v in vals):
        raise NclabError(f"--counts must be whole numbers (samples per class), got {text!r}")
    return [int(v) for v in vals]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--counts", required=True, help="samples per class, e.g. 200,100,50,50")
    p.add_argument("--depth", type=int, default=1, help="number of linear layers M (default 1)")
    p.add_argument("--lambda-w", default="5e-4", help="weight decay per layer: one value or a comma list of M values")
    p.add_argument("--lambda-h", type=float, default=5e-4, help="feature decay λ_H")
    p.add_argument("--bias", action="store_true", help="add an unregularised classifier bias")
    p.add_argument("--loss", choices=["mse", "ce"], default="mse",
                   help="mse (default; the closed form exists for it) or ce (solve only: no closed form)")
    p.add_argument("--json", action="store_true", help="print only JSON on stdout")


def add_parser(sub) -> None:
    p = sub.add_parser("ufm", help="deep linear unconstrained-features model: closed form and solver")
    s = p.add_subparsers(dest="ufm_cmd", metavar="{predict,solve}")
    pp = s.add_parser("predict", help="closed-form global optimum (MSE)")
    _common(pp)
    pp.set_defaults(func=_predict)
    ps = s.add_parser("solve", help="solve numerically and compare with the closed form")
    _common(ps)
    ps.add_argument("--optimizer", choices=["gd", "lbfgs"], default="gd",
                    help="gd (full-batch gradient descent with momentum, the papers' setting; default; the more "
                         "accurate of the two: on the README example max relative error vs the closed form 2.4e-9, "
                         "against 4.7e-8 for lbfgs) or lbfgs (strong-Wolfe line search: fewer iterations, and it "
                         "can escape the zero solution from --init-std 1)")
    ps.add_argument("--iters", type=int, default=20000,
                    help="iterations (default 20000; for lbfgs one iteration is several function evaluations)")
    ps.add_argument("--width", default=None, help="feature/hidden width: one value or d,d_1,…,d_{M-1} (default max(32,K))")
    ps.add_argument("--lr", type=float, default=0.1, help="gd learning rate (default 0.1)")
    ps.add_argument("--momentum", type=float, default=0.9, help="gd momentum (default 0.9)")
    ps.add_argument("--init-std", type=float, default=0.1,
                    help="standard deviation of the Gaussian initialisation of H and every W (default 0.1)")
    ps.add_argument("--seed", type=int, default=0, help="seed of the initialisation (default 0)")
    ps.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    ps.add_argument("--quiet", action="store_true", help="no progress output")
    ps.set_defaults(func=_solve)
    p.set_defaults(func=lambda args: missing_subcommand(p))


def _args(args) -> dict:
    return dict(counts=_counts(args.counts), depth=args.depth, lambda_w=_floats(args.lambda_w, "--lambda-w"),
                lambda_h=args.lambda_h, bias=args.bias)




def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))


def _table(rows: list[dict], cols: tuple) -> str:
    head = ["class", "n", *cols, "collapses"]
    lines = ["  ".join(f"{h:>11}" for h in head)]
    for r in rows:
        lines.append("  ".join(f"{_fmt(r.get(c)):>11}" for c in head))
    return "\n".join(lines)


def _predict(args) -> int:
    from nclab.theory.closed_form import predict_ufm

    pred = predict_ufm(**_args(args), loss=args.loss)
    d = pred.to_dict()
    if args.json:
        print(json.dumps(_clean(d)))
        return 0
    print(f"closed form: K={pred.K} N={pred.N} M={pred.depth} b_M={pred.b_M:.6g} beta*_M={pred.beta_star:.6g}"
          f" bias={'on, b*=' + str(np.round(pred.b, 6).tolist()) if pred.bias else 'off'}")
    print(_table(pred.per_class, ("beta", *_COLS)))
    print(f"optimal objective: {pred.objective:.10g}")
    return 0


def _solve(args) -> int:
    from nclab.theory.closed_form import predict_ufm
    from nclab.theory.solver import compare_to_prediction, measured_geometry, solve_ufm

    a = _args(args)
    width = None if args.width is None else [int(v) for v in _floats(args.width, "--width")]
    if width is not None and min(width) < 1:
        raise NclabError(f"--width must be >= 1 (feature and hidden widths), got {args.width}")
    pred = None
    if args.loss == "mse":
        pred = predict_ufm(**a)
        widths = width or [max(32, pred.K)]
        live = sum(1 for m in pred.modes if not m["collapses"])
        if min(widths) < live:
            raise NclabError(f"width {min(widths)} is below the optimum's rank {live}; the closed form needs --width >= {live}")
    sol = solve_ufm(**a, loss=args.loss, width=width, optimizer=args.optimizer, iters=args.iters, lr=args.lr,
                    momentum=args.momentum, init_std=args.init_std, seed=args.seed, device=args.device,
                    eval_steps=[args.iters], prediction=pred, show_progress=not (args.quiet or args.json))
    meas = measured_geometry(sol)
    out = {"config": {**a, "loss": args.loss, "optimizer": args.optimizer, "iters": args.iters, "steps_run": sol.steps,
                      "width": width, "lr": args.lr, "momentum": args.momentum, "init_std": args.init_std,
                      "seed": args.seed, "device": args.device},
           "measured": meas, "metrics": sol.history[-1] if sol.history else {},
           "prediction": pred.to_dict() if pred is not None else None,
           "comparison": compare_to_prediction(meas, pred) if pred is not None else None}
    if out["comparison"] is not None:
        for row, c in zip(meas["per_class"], out["comparison"]["measured_collapses"]):
            row["collapses"] = c
    if args.json:
        print(json.dumps(_clean(out)))
        return 0
    print(f"solved with {args.optimizer} for {sol.steps} iterations: objective {meas['objective']:.10g}"
          + (f" (closed form {pred.objective:.10g})" if pred is not None else " (no closed form for CE)"))
    print(_table(meas["per_class"], _COLS))
    m = out["metrics"]
    print("metrics: " + ", ".join(f"{k}={m[k]:.3g}" for k in ("nc1", "etf_error_means", "of_error_means",
                                                                  "of_error_weights", "means_pred_error",
                                                                  "weights_pred_error") if k in m))
    if pred is not None:
        c = out["comparison"]
        print(f"max relative difference to the closed form: {c['max_rel_diff']:.3g};"
              f" objective: {c['objective_rel_diff']:.3g}")
        if c["collapsed_but_optimum_keeps"]:
            print(f"note: classes {c['collapsed_but_optimum_keeps']} collapsed to zero although the global optimum keeps "
                  "them (zero is a local minimum for M >= 2); try --optimizer lbfgs --init-std 1")
        if c["kept_but_optimum_collapses"]:
            print(f"note: classes {c['kept_but_optimum_collapses']} are not zero although the optimum collapses them"
                  " (not converged, or a positive local minimum); run more --iters")
    return 0
