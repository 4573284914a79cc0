"""``nclab probe``: NC metrics (and fine-label recovery) of any model at named layers, streamed.

    nclab probe --model SPEC --data SOURCE --hierarchy H --layers L1,L2 [--split train,test] [--recover]
                [--classifier fc] [--weights PATH] [--device cuda] [--precision auto|fp32|bf16] [--batch-size N]
                [--max-samples N] --out DIR [--json]
    nclab probe --model hf:PATH --text FILE_OR_GLOB --layers transformer.h.* --out DIR   (token-level collapse)
    nclab probe --list-layers SPEC [--json]
"""

from __future__ import annotations

import json
from pathlib import Path

from nclab.utils.errors import NclabError
from nclab.utils.io import json_clean
from nclab.utils.precision import DEFAULT_PRECISION, PRECISIONS


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="NC metrics and fine-label recovery of any model (torchvision, timm, "
                                     "Hugging Face, your own) at named layers, streamed",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", metavar="SPEC", help="torchvision:NAME, timm:NAME, hf:NAME_OR_PATH, "
                   "python:FILE.py:FACTORY, torchscript:FILE.pt or run:RUN_DIR (docs/probe.md)")
    p.add_argument("--list-layers", metavar="SPEC", default=None,
                   help="print the model's module names with output shapes from one dummy forward pass")
    p.add_argument("--weights", metavar="PATH", default=None, help="a state dict (.pt, weights_only) or .safetensors")
    p.add_argument("--data", metavar="SOURCE", default=None,
                   help="an nclab data source (cifar10, imagefolder:PATH, ...)")
    p.add_argument("--text", metavar="FILE_OR_GLOB", default=None,
                   help="text files for a causal language model: every next-token position is a sample")
    p.add_argument("--hierarchy", default=None, help="mod:K, adjacent:K, file:PATH, cifar100, ... (docs/data.md)")
    p.add_argument("--layers", default=None, help="module names, glob patterns (blocks.*), all-blocks, NAME:input")
    p.add_argument("--classifier", default=None, metavar="NAME",
                   help="the final nn.Linear: its weights give NC2-NC4 at its input (else not applicable)")
    p.add_argument("--split", default="train", help="train, test or train,test (recovery: fit on the first, score "
                                                    "on the last)")
    p.add_argument("--recover", action="store_true", help="run the fine-label recovery protocol per layer")
    p.add_argument("--reduce", default="auto", choices=("auto", "flatten", "mean"),
                   help="how a layer output becomes (N, D): auto = spatial mean of 4-D maps, flatten otherwise")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    # checked in main (not argparse choices), so a bad value is the one-line error: of every other bad input
    p.add_argument("--precision", default=DEFAULT_PRECISION, metavar="{" + ",".join(PRECISIONS) + "}",
                   help="the forward pass's precision (statistics are float64 either way): "
                        + "; ".join(f"{k} = {v}" for k, v in PRECISIONS.items())
                        + f" (default {DEFAULT_PRECISION}; --data only, --text runs fp32)"),
    p.add_argument("--batch-size", type=int, default=256, help="inputs per forward pass (default 256)")
    p.add_argument("--max-samples", type=int, default=10000, help="rows per split kept for --recover (default 10000)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N samples of each split")
    p.add_argument("--image-size", type=int, default=None, help="resize images to this size (default: the model's)")
    p.add_argument("--mean", default=None, help="per-channel mean on the 0..1 scale, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", default=None, help="per-channel std on the 0..1 scale")
    p.add_argument("--context", type=int, default=128, help="--text: tokens per window (default 128)")
    p.add_argument("--max-tokens", type=int, default=None, help="--text: stop after this many token positions")
    p.add_argument("--out", metavar="DIR", default=None, help="writes probe.json, probe.html, figures/depth.png")
    p.add_argument("--force", action="store_true", help="overwrite an existing probe in --out")
    p.add_argument("--resume", action="store_true", help="continue a probe paused by --time-limit")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="pause cleanly after SECONDS (state in DIR, exit code 75); continue with --resume")
    p.add_argument("--json", action="store_true", help="print only the result JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=main)


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise NclabError(f"--{what} must be a comma list of numbers, e.g. 0.485,0.456,0.406; got {text!r}") from None
    if not vals or (what == "std" and any(v <= 0 for v in vals)):
        raise NclabError(f"--{what} must be a non-empty comma list of {'positive ' if what == 'std' else ''}numbers")
    return vals


def _positive(v, what: str) -> None:
    if v is not None and v < 1:
        raise NclabError(f"--{what} must be a positive integer, got {v}")


def list_layers_main(args) -> int:
    import torch

    from nclab.models.hooks import list_layers
    from nclab.experiments import probe as _registers_run_sources  # noqa: F401
    from nclab.models.sources import load_model

    lm = load_model(args.list_layers, weights=args.weights)
    if lm.kind == "causal_lm":
        example = torch.zeros((1, lm.input_shape[0]), dtype=torch.long)
    elif lm.input_shape is None:
        raise NclabError(f"{args.list_layers} does not say its input shape; give the module an input_shape "
                         "attribute, e.g. (3, 32, 32)")
    else:
        example = torch.zeros((2, *lm.input_shape))
    rows = list_layers(lm.module, example)
    if args.json:
        print(json.dumps(json_clean({"model": args.list_layers, "input_shape": list(lm.input_shape), "layers": rows})))
        return 0
    print(f"{'name':<40s} {'type':<22s} {'output shape':<22s} features")
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"]) if r["shape"] else "-"
        feat = f"{r['dim']} ({r['reduction']})" if r["dim"] else r.get("note", "")
        print(f"{r['name']:<40s} {r['type']:<22s} {shape:<22s} {feat}")
    return 0


def _prepare_out(args) -> Path:
    if not args.out:
        raise NclabError("--out DIR is needed (probe.json and probe.html are written there)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NclabError(f"--out {out} is a file; pass a folder")
    if args.resume and args.force:
        raise NclabError("--resume continues a paused probe and --force starts over; pass one of them")
    if (out / "probe.json").exists() and not args.force:
        raise NclabError(f"{out}/probe.json exists; pass --force to overwrite it or choose another --out")
    if args.resume and not (out / "probe_state.pt").exists():
        raise NclabError(f"nothing to resume in {out} (no probe_state.pt); run without --resume")
    return out


def main(args) -> int:
    if args.list_layers:
        if args.model or args.data or args.text:
            raise NclabError("--list-layers SPEC takes the model itself; drop --model/--data/--text")
        return list_layers_main(args)
    if not args.model:
        raise NclabError("--model SPEC is needed (e.g. torchvision:resnet18, hf:PATH); or use --list-layers SPEC")
    if bool(args.data) == bool(args.text):
        raise NclabError("give either --data SOURCE (images/vectors) or --text FILE_OR_GLOB (a causal language model)")
    if not args.layers:
        raise NclabError("--layers is needed: module names, glob patterns or all-blocks (see --list-layers SPEC)")
    for what in ("batch_size", "max_samples", "limit", "image_size", "context", "max_tokens"):
        _positive(getattr(args, what), what.replace("_", "-"))
    if args.time_limit is not None and args.time_limit <= 0:
        raise NclabError(f"--time-limit must be positive seconds, got {args.time_limit}")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise NclabError("--device cuda but no CUDA device is available; use --device cpu")
    elif args.device != "cpu":
        raise NclabError(f"--device must be cpu or cuda, got {args.device!r}")
    if args.precision not in PRECISIONS:
        raise NclabError(f"--precision must be one of {', '.join(PRECISIONS)}; got {args.precision!r}")
    if args.text and args.precision == "bf16":
        raise NclabError("--precision bf16 is for --data probes; a --text probe runs fp32 (drop --precision)")
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if not splits or any(s not in ("train", "test") for s in splits) or len(set(splits)) != len(splits):
        raise NclabError(f"--split must be train, test or train,test; got {args.split!r}")
    mean, std = _floats(args.mean, "mean"), _floats(args.std, "std")
    if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
        raise NclabError("--mean and --std go together, one value per channel each")
    out = _prepare_out(args)
    from nclab.utils.progress import progress

    state = out / "probe_state.pt" if (args.time_limit is not None or args.resume) else None
    if args.text:
        from nclab.experiments.tokens import probe_text

        res = probe_text(args.model, args.text, layers=args.layers, hierarchy=args.hierarchy,
                         classifier=args.classifier, weights=args.weights, device=args.device,
                         batch_size=args.batch_size, context=args.context, max_tokens=args.max_tokens,
                         progress=None if args.quiet or args.json else progress)
        res.info.setdefault("precision", "fp32")
    else:
        from nclab.experiments.probe import probe

        res = probe(args.model, args.data, layers=args.layers, hierarchy=args.hierarchy, classifier=args.classifier,
                    recover=args.recover, device=args.device, batch_size=args.batch_size,
                    max_samples=args.max_samples, splits=splits, reduce=args.reduce, weights=args.weights,
                    image_size=args.image_size, mean=mean, std=std, limit=args.limit, time_limit=args.time_limit,
                    state_path=state, progress=None if args.quiet or args.json else progress,
                    precision=args.precision)
    from nclab.report.probe import write_probe_report
    from nclab.utils.io import atomic_write_json

    d = json_clean(res.to_dict())
    write_probe_report(res, out)
    atomic_write_json(out / "probe.json", d)  # last: its presence marks a finished probe
    if args.json:
        print(json.dumps(d))
    else:
        from nclab.utils.progress import say

        for line in _summary(res):
            print(line)
        say(f"wrote {out / 'probe.json'} and {out / 'probe.html'}")
    return 0


def _summary(res) -> list[str]:
    lines = []
    for split, per in res.metrics.items():
        lines.append(f"split {split}:")
        for n in res.layers:
            m = per.get(n, {})
            parts = [f"{v} nc1={_fmt(m.get(v, {}).get('nc1'))}" for v in ("fine", "coarse") if v in m]
            if "fine_within_coarse" in m:
                parts.append(f"fine_within_coarse nc1={_fmt(m['fine_within_coarse'].get('mean'))}")
            if n in res.recovery:
                parts.append(f"recovery={_fmt(res.recovery[n].get('test_acc'))}")
            lines.append(f"  {n:<28s} D={res.dims.get(n)} ({res.reductions.get(n)})  " + "  ".join(parts))
    return lines


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"
