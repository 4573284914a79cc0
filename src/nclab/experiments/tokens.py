"""Token-level collapse of a causal language model: every next-token position is a sample whose class is the
next token (K = vocabulary size).

Text files are tokenized with the model folder's own tokenizer (``.npy`` files holding token ids are read as
they are), concatenated, and cut into non-overlapping windows of ``context + 1`` tokens; window w gives the
inputs w[:-1] and the labels w[1:]. Per layer (its output at every position, ``reduce="tokens"``) a
:class:`~nclab.collapse.large_k.SparseClassStats` accumulates counts, means, traces and the D x D scatter;
the metrics are :func:`~nclab.collapse.large_k.large_k_metrics` (tiled pairwise metrics, generalised NC2 for
K > D + 1). NC4 (nearest of K means per token) is not computed: listed in ``info["not_applicable"]``.
"""

from __future__ import annotations

import glob as _glob
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nclab.collapse.large_k import SparseClassStats, large_k_metrics
from nclab.experiments.probe import ProbeResult, _as_loaded
from nclab.models.hooks import LayerTaps, resolve_layers
from nclab.utils.errors import NclabError
from nclab.utils.io import json_clean


def read_tokens(pattern: str, tokenizer=None) -> np.ndarray:
    """Token ids (int64, 1-D) of every file matching ``pattern`` (sorted): ``.npy`` ids, else text."""
    files = sorted(_glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise NclabError(f"--text {pattern!r} matches no file; pass a text file or a glob such as 'data/*.txt'")
    parts = []
    for f in files:
        if f.endswith(".npy"):
            a = np.load(f, allow_pickle=False)
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise NclabError(f"{f} must hold a 1-D integer array of token ids")
            parts.append(a.astype(np.int64))
            continue
        if tokenizer is None:
            raise NclabError(f"the model folder has no tokenizer to read {f}; save one beside it "
                             "(tokenizer.save_pretrained) or pass token ids as a .npy file")
        text = Path(f).read_text(encoding="utf-8", errors="replace")
        parts.append(np.asarray(tokenizer(text)["input_ids"], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


@torch.no_grad()
def probe_text(model, text: str | np.ndarray, *, layers: str | Sequence[str], hierarchy=None,
               classifier: str | None = None, weights: str | None = None, device: str | torch.device = "cpu",
               batch_size: int = 16, context: int = 128, max_tokens: int | None = None,
               max_scatter_dim: int = 4096, progress=None) -> ProbeResult:
    """Token-level probe (module docstring). ``text``: a file / glob, or an int array of token ids.
    ``hierarchy``: optional (``file:PATH`` mapping token ids to groups); ``classifier``: the output
    projection (e.g. ``lm_head``) for the weight metrics; ``batch_size`` windows per forward pass."""
    t0 = time.perf_counter()
    lm = _as_loaded(model, weights)
    if lm.kind != "causal_lm" and isinstance(model, str):
        raise NclabError(f"--text needs a causal language model (hf:PATH of a *ForCausalLM / *LMHeadModel); "
                         f"{model} is a {lm.kind} model: use --data")
    net = lm.module.to(device).eval()
    dev = torch.device(device)
    names = resolve_layers(net, layers)
    vocab = int(lm.info.get("vocab_size") or net.get_output_embeddings().weight.shape[0])
    ids = text if isinstance(text, np.ndarray) else read_tokens(text, lm.tokenizer)
    if max_tokens is not None:
        ids = ids[: int(max_tokens) + 1]
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise NclabError(f"token id {int(ids.max())} outside the vocabulary 0..{vocab - 1}; "
                         "tokenize with this model's tokenizer")
    nwin = (len(ids) - 1) // context
    if nwin < 1:
        raise NclabError(f"the text has {len(ids)} tokens, fewer than one window of --context {context} + 1")
    windows = torch.from_numpy(ids[: nwin * context + 1])
    W = None
    if classifier is not None:
        mods = dict(net.named_modules())
        if classifier not in mods or not isinstance(mods[classifier], torch.nn.Linear):
            raise NclabError(f"--classifier {classifier!r} is not an nn.Linear of this model (for GPT-2: lm_head)")
        W = mods[classifier].weight.detach()
    hier = None
    if hierarchy is not None:
        from nclab.data.builders import hierarchy_from_arg

        hier = hierarchy_from_arg(hierarchy, vocab)
    stats: dict[str, SparseClassStats] = {}
    starts = list(range(0, nwin, batch_size))
    reductions: dict[str, str] = {}
    with LayerTaps(net, names, reduce="tokens") as taps:
        it = progress(starts, desc="probe text") if progress else starts
        for s in it:
            e = min(s + batch_size, nwin)
            idx = torch.arange(s * context, e * context).view(e - s, context)
            x, y = windows[idx].to(dev), windows[idx + 1].reshape(-1).to(dev)
            feats = taps(x)
            for n in names:
                h = feats[n]
                if n not in stats:
                    stats[n] = SparseClassStats(vocab, int(h.shape[1]), scatter=int(h.shape[1]) <= max_scatter_dim,
                                                device=dev)
                stats[n].update(h, y)
            reductions = dict(taps.reductions)
    metrics: dict[str, dict] = {}
    for n, st in stats.items():
        w_ok = W is not None and int(W.shape[1]) == st.dim
        per = {"fine": large_k_metrics(st, W if w_ok else None)}
        if hier is not None:
            coarse = st.to_class_stats().coarsen(hier.fine_to_coarse)
            per["coarse"] = large_k_metrics(coarse)
        metrics[n] = json_clean(per)
    info = {"family": lm.family, "kind": "causal_lm", "device": str(dev), "num_classes": vocab,
            "token_positions": int(nwin * context), "context": context, "classifier": classifier,
            "hierarchy": None if hier is None else hier.spec,
            "not_applicable": {"metrics": ["ncc_mismatch", "classifier_acc"],
                               "reason": "token level: NC4 needs the nearest of K class means for every token"},
            "time_s": time.perf_counter() - t0, **{k: v for k, v in lm.info.items()}}
    return ProbeResult(lm.spec, names, {n: reductions.get(n, "tokens") for n in names},
                       {n: st.dim for n, st in stats.items()}, {"text": metrics}, {}, info)


__all__ = ["probe_text", "read_tokens"]
