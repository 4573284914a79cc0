"""``nclab data info``: what a data source holds, per split and per fine/coarse class."""

from __future__ import annotations

import json
import sys

import numpy as np

from nclab.commands import missing_subcommand


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="inspect data sources (see `nclab data info --help`)")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    info = dsub.add_parser("info", help="per-split counts per fine and coarse class of a data source")
    info.add_argument("--source", required=True, help="source spec, e.g. imagefolder:PATH, cifar10[:PATH], digits, "
                                                      "synthetic:coarse=4,fine_per_coarse=3 (see docs/data.md)")
    info.add_argument("--hierarchy", default=None, help="hierarchy spec, e.g. mod:5, adjacent:5, random:0:5, cifar100, "
                                                        "file:PATH, split:2, identity (default: the dataset's own, if any)")
    info.add_argument("--subsample", default=None, help="per-class train counts 'c0,c1,...' or 'ratio=R' (imbalance)")
    info.add_argument("--seed", type=int, default=0, help="seed for --subsample (default 0)")
    info.add_argument("--image-size", type=int, default=None, metavar="PX",
                      help="imagefolder: resize each image's shorter side to PX and centre-crop PX x PX (mixed sizes)")
    info.add_argument("--cache-dir", default=None, help="decoded-data cache (default $NCLAB_CACHE or ~/.cache/nclab)")
    info.add_argument("--no-download", action="store_true", help="never download; fail if the files are missing")
    info.add_argument("--json", action="store_true", help="print only JSON on stdout")
    info.add_argument("--quiet", action="store_true", help="no progress bars")
    info.set_defaults(func=run_info)
    p.set_defaults(func=lambda args: missing_subcommand(p))


def dataset_info(ds, hierarchy=None) -> dict:
    """Counts per split: ``splits[s]['fine'][f] = {class, name, count}``, ``splits[s]['coarse'][c]`` likewise
    plus the fine classes it holds. For a ``split:M`` hierarchy the fine classes are the pseudo classes."""
    from nclab.data import split_labels

    out = {
        "name": ds.name, "source": ds.source, "checksum": ds.checksum, "is_image": ds.is_image,
        "input_shape": list(ds.input_shape), "dtype": str(ds.train.x.dtype).replace("torch.", ""),
        "num_classes": ds.num_classes, "class_names": list(ds.class_names),
        "hierarchy": hierarchy.to_dict() if hierarchy is not None else None, "splits": {},
    }
    if "subsample" in ds.meta:
        out["subsample"] = ds.meta["subsample"]
    is_split = hierarchy is not None and hierarchy.kind == "split"
    fine_names = hierarchy.fine_names if is_split else ds.class_names
    for name, split in (("train", ds.train), ("test", ds.test)):
        y = split.y.cpu().numpy()
        if is_split:
            y = split_labels(y, hierarchy)
        fine = np.bincount(y, minlength=len(fine_names))
        entry = {"n": int(y.size),
                 "fine": [{"class": i, "name": fine_names[i], "count": int(c)} for i, c in enumerate(fine)]}
        if hierarchy is not None:
            coarse = np.bincount(hierarchy.coarse_of(y), minlength=hierarchy.num_coarse)
            entry["coarse"] = [{"class": k, "name": hierarchy.coarse_names[k], "fine": hierarchy.fine_classes(k),
                                "count": int(c)} for k, c in enumerate(coarse)]
        out["splits"][name] = entry
    return out


def _print_text(info: dict) -> None:
    w = sys.stdout.write
    w(f"{info['name']}  source={info['source']}\n")
    w(f"checksum={info['checksum'][:16]}  input_shape={tuple(info['input_shape'])} {info['dtype']}  "
      f"classes={info['num_classes']}\n")
    if info.get("subsample"):
        w(f"train subsampled: counts={info['subsample']['counts']} seed={info['subsample']['seed']}\n")
    tr, te = info["splits"]["train"], info["splits"]["test"]
    w(f"train={tr['n']}  test={te['n']}\n\n")
    width = max(len(e["name"]) for e in tr["fine"]) + 2
    w(f"{'fine class':<{width + 5}}{'train':>8}{'test':>8}\n")
    for a, b in zip(tr["fine"], te["fine"]):
        w(f"{a['class']:>3}  {a['name']:<{width}}{a['count']:>8}{b['count']:>8}\n")
    if info["hierarchy"] is not None:
        h = info["hierarchy"]
        w(f"\nhierarchy {h['spec']}: {len(h['coarse_names'])} coarse classes\n")
        width = max(len(e["name"]) for e in tr["coarse"]) + 2
        w(f"{'coarse class':<{width + 5}}{'train':>8}{'test':>8}  fine classes\n")
        for a, b in zip(tr["coarse"], te["coarse"]):
            w(f"{a['class']:>3}  {a['name']:<{width}}{a['count']:>8}{b['count']:>8}  {a['fine']}\n")


def run_info(args) -> int:
    from nclab.data import build_hierarchy, load_dataset, subsample
    from nclab.utils.errors import NclabError

    ds = load_dataset(args.source, cache_dir=args.cache_dir, download=not args.no_download, image_size=args.image_size)
    if args.subsample:
        s = args.subsample.strip()
        if s.startswith("ratio="):
            try:
                ratio = float(s.split("=", 1)[1])
            except ValueError:
                raise NclabError(f"--subsample {s}: the ratio must be a number, e.g. ratio=10") from None
            ds = subsample(ds, ratio=ratio, seed=args.seed)
        else:
            ds = subsample(ds, counts=s, seed=args.seed)
    h = build_hierarchy(args.hierarchy, ds.class_names, ds) if args.hierarchy else ds.hierarchy
    info = dataset_info(ds, h)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        _print_text(info)
    return 0
