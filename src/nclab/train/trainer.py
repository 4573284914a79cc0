"""The crash-safe trainer.

``Trainer(cfg, run_dir).fit(resume=False)`` trains ``cfg.model`` on ``cfg.data`` and writes the run
directory (see :mod:`nclab.rundir`). Guarantees:

- Checkpoints (``checkpoints/last.pt``) every ``train.checkpoint_every`` epochs and at the end, written
  atomically *after* that epoch's metrics line; they carry model, optimiser, step, every RNG state,
  the metrics rows so far and callback states. ``fit(resume=True)`` restores them and rewrites
  metrics.jsonl from the checkpoint, so on CPU a run killed at any point and resumed ends with
  parameters and (non-timing) metrics identical to an uninterrupted run. The data order and
  augmentation are pure functions of ``(seed, epoch, step)`` (:class:`nclab.data.batches.BatchIterator`)
  and the learning rate a pure function of the step (:mod:`nclab.train.schedules`).
- A non-finite loss stops at once: status ``stopped_nan``, metrics cut back to the last good
  checkpoint, :class:`NclabError` naming epoch, step and that checkpoint.
- Under torchrun (``WORLD_SIZE`` > 1): DistributedDataParallel over rank shards of the same global batches,
  statistics summed over the ranks, rank 0 alone writes the run directory (:mod:`nclab.train.distributed`,
  docs/distributed.md). Otherwise nothing of it runs.

metrics.jsonl (1-based ``epoch``): ``lr`` (at the epoch's last step), ``train_loss``/``train_acc``
(mean over the epoch's training steps: train mode, augmented, the loss incl. penalties),
``test_loss``/``test_acc`` (eval mode, every ``eval_every`` epochs and the last), ``epoch_time_s``,
``images_per_s`` (training images / training seconds), ``time_s`` (cumulative, across resumes).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nclab.data.augment import Augment
from nclab.data.batches import BatchIterator
from nclab.data.types import Dataset, Split
from nclab.models import flip_mean_features
from nclab.rundir import RunDir
from nclab.runlock import run_lock
from nclab.train import distributed as ddp
from nclab.train import losses
from nclab.train.callbacks import Callback, build_callbacks
from nclab.train.checkpoint import read_checkpoint, rng_state, set_rng_state
from nclab.train.config import Config, config_diff, load_config
from nclab.train.loggers import build_loggers, check_loggers
from nclab.train.schedules import lr_at
from nclab.train.tricks import Lookahead, StemBiasFreeze, TimeSlice
from nclab.utils import clock
from nclab.utils.errors import NclabError, RunPaused
from nclab.utils.io import atomic_torch_save, atomic_write_text, json_clean, remove_stale_temps
from nclab.utils.progress import progress, say
from nclab.utils.seed import seed_everything

# wall-clock keys of a metrics.jsonl row (time_s: whole run incl. evaluation and callbacks; train_time_*: the
# optimisation steps only, the "time of training" budgets refer to)
NONFINITE_CHECK_EVERY = 10  # GPU: steps between host reads of the losses (the progress bar reads them as often)
TIMING_KEYS = ("epoch_time_s", "images_per_s", "time_s", "train_time_s", "train_time_total_s")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NclabError("train.device=cuda but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)


def limit_per_class(split: Split, n: int) -> Split:
    """The first ``n`` samples (in storage order) of each class."""
    y = split.y.numpy()
    keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in np.unique(y)]))
    idx = torch.from_numpy(keep)
    return Split(split.x[idx], split.y[idx])


def check_dataset(ds: Dataset) -> None:
    """A :class:`Dataset` built by hand: each split a tensor ``x`` (N, ...) with a matching 1-D integer tensor
    ``y`` (N,) of class indices ``0..len(class_names)-1``; else one :class:`NclabError` naming the problem."""
    k = len(ds.class_names)
    for name, sp in (("train", ds.train), ("test", ds.test)):
        x, y = sp.x, sp.y
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise NclabError(f"dataset {ds.name!r}: the {name} split's x and y must be torch tensors, got "
                             f"{type(x).__name__} and {type(y).__name__}; wrap arrays with torch.from_numpy")
        if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise NclabError(f"dataset {ds.name!r}: {name} labels must be a 1-D integer tensor (N,), got "
                             f"shape {tuple(y.shape)} dtype {y.dtype}")
        if x.dim() < 2 or x.shape[0] != y.shape[0]:
            raise NclabError(f"dataset {ds.name!r}: {name} x must be (N, ...) with one row per label, got x "
                             f"{tuple(x.shape)} and {y.shape[0]} labels")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise NclabError(f"dataset {ds.name!r}: {name} label {bad} is outside 0..{k - 1} ({k} class_names); "
                             "labels are 0-based indices into class_names")


def build_model_for(trainer: Trainer) -> torch.nn.Module:
    """A fresh model of ``trainer``'s config (``model``, ``train.channels_last``) on its device, initialised from
    the global RNG as it stands, with the data-dependent init of models that have one: the one place models are
    built for a run (the trainer, and the random-init baseline of ``nclab.finegrain.pipeline``)."""
    from nclab.models import build_model, model_kwargs

    name = trainer.cfg.model.name
    allowed = set(model_kwargs(name)) | {"head_depth", "head_bias", "head_width"}
    given = trainer.cfg.model.backbone_kwargs()
    extra = sorted(k for k in given if k not in allowed)
    if extra:
        raise NclabError(f"model.{extra[0]} does not apply to model {name}; it takes {', '.join(sorted(allowed))}")
    model = build_model(name, trainer.num_classes, trainer.dataset.input_shape, **given).to(trainer.device)
    if hasattr(model, "data_init"):  # e.g. fastnet's whitening stem, from 5000 evenly strided training inputs
        xt = trainer.dataset.train.x
        x = xt[:: max(1, len(xt) // 5000)][:5000]  # strided: files are often stored class by class
        it = trainer._loader_for(x, torch.zeros(len(x), dtype=torch.int64), 5000, False)
        model.data_init(it.prepare(it.x))
    if trainer.cfg.train.channels_last and trainer.dataset.is_image:
        model = model.to(memory_format=torch.channels_last)
    return model


class Trainer:
    """Train one model on one dataset; see the module docstring for the guarantees.

    ``dataset``: an already loaded :class:`Dataset` (skips ``load_dataset(cfg.data.source)``; tests and
    experiments that share one dataset use it). Public after construction: ``cfg``, ``run``, ``model``,
    ``dataset``, ``hierarchy``, ``device``, ``optimizer``, ``callbacks``, ``epoch`` (completed epochs).
    """

    def __init__(self, cfg: Config | dict | str | os.PathLike, run_dir: str | os.PathLike,
                 callbacks: list[Callback] | None = None, dataset: Dataset | None = None):
        # train.time_limit_s counts from the CLI command's start, else from here (data loading included)
        t_built = clock.command_start() or time.perf_counter()
        self.cfg = load_config(cfg)  # a Config passes through as it is; a path or mapping is parsed here, once
        self.run = RunDir(run_dir)
        c = self.cfg
        self.device = resolve_device(c.train.device)
        # under torchrun: join the process group; only rank 0 writes the run directory (see _dist_setup)
        self.distributed = self._dist_setup(run_dir)
        if c.train.threads:
            torch.set_num_threads(c.train.threads)
        seed_everything(c.seed)
        self.dataset = self._prepare_dataset(dataset)
        self.hierarchy = self._build_hierarchy()
        self.num_classes = self._num_classes()
        self._targets: dict[str, torch.Tensor] = {}
        self.model = self._build_model()
        if self.distributed and c.train.sync_bn:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.optimizer = self._build_optimizer()
        self.stem_freeze = StemBiasFreeze(c.optim.stem_bias_epochs, self.model, c.model.name)
        self.callbacks = list(callbacks or []) + build_callbacks(c.callbacks)
        check_loggers(c.train.loggers)  # a missing extra fails here, before any training
        self.loggers: list = []
        self.train_loader = self._loader("train", train=True)
        self._eval_loaders: dict[str, BatchIterator] = {}
        self.steps_per_epoch = len(self.train_loader)
        self.lookahead = Lookahead(c.optim.lookahead_every, c.optim.lookahead_decay,
                                   self.steps_per_epoch * c.optim.epochs)
        self.epoch = 0
        self.global_step = 0
        self.metrics: list[dict] = []
        self._elapsed = 0.0
        self._last_ckpt: tuple[int, Path] | None = None
        self._fwd = _compiled(self.model, c.train.compile, self.device)
        self._ddp_fwd: torch.nn.Module | None = None  # under torchrun: the DDP-wrapped model (built in fit)
        self.time_slice = TimeSlice(c.train.time_limit_s, t_built)
        # The non-finite-loss check reads the loss on the host. On CPU that is free; on a GPU each read makes
        # the host wait for the device, so there the losses stay on the device and are checked every
        # NONFINITE_CHECK_EVERY steps (the stop still names the first bad step; nothing is checkpointed between
        # a bad step and its check). Deferring the read matters most under CUDA graphs, where the host is fast.
        self.nonfinite_check_every = 1 if self.device.type == "cpu" else NONFINITE_CHECK_EVERY
        if self.distributed:  # every rank has its data and model: collectives now get train.dist_timeout_s
            ddp.ready(c.train.dist_timeout_s)

    # setup -------------------------------------------------------------------------------
    def _dist_setup(self, run_dir) -> bool:
        """torchrun (WORLD_SIZE > 1): init the process group, this rank's device, a read-only run directory
        on ranks other than 0. One process: nothing changes."""
        t = self.cfg.train
        if not ddp.init_from_env(self.device, t.dist_timeout_s):
            return False
        if t.sync_bn and self.device.type != "cuda":
            raise NclabError("train.sync_bn needs CUDA GPUs (torch's SyncBatchNorm has no CPU kernel); "
                             "set train.sync_bn=false on CPU")
        self.device = ddp.local_device(self.device)
        self.run = ddp.run_dir_for_rank(run_dir)
        return True

    def _prepare_dataset(self, ds: Dataset | None) -> Dataset:
        d = self.cfg.data
        if ds is None:
            try:
                from nclab.data import load_dataset
            except ImportError:
                raise NclabError("nclab.data.load_dataset is not available in this install; pass dataset= to Trainer")
            ds = load_dataset(d.source, image_size=d.image_size)
        else:
            check_dataset(ds)  # a caller's own arrays: fail here with a plain message, not deep inside a step
        if d.subsample is not None:
            from nclab.data import subsample

            s = d.subsample
            kw = dict(s) if isinstance(s, dict) else ({"counts": s} if isinstance(s, list) else {"ratio": s})
            kw.setdefault("seed", self.cfg.seed)  # on a copy: the resolved config keeps what the user wrote
            ds = subsample(ds, **kw)
        if d.limit_per_class:
            n = d.limit_per_class
            ds = Dataset(ds.name, limit_per_class(ds.train, n), limit_per_class(ds.test, n), ds.class_names,
                         ds.source, ds.checksum, ds.hierarchy, dict(ds.meta))
        if len(ds.train.y) == 0:
            raise NclabError(f"the train split of {ds.name} is empty (after data.subsample/limit_per_class); "
                             "nothing to train on")
        return ds

    def _build_hierarchy(self):
        d = self.cfg.data
        h = self.dataset.hierarchy
        if d.hierarchy:
            from nclab.data import build_hierarchy

            h = build_hierarchy(d.hierarchy, self.dataset.class_names, dataset=self.dataset)
        if d.labels == "coarse" and h is None:
            raise NclabError(f"data.labels=coarse but {self.dataset.name} has no hierarchy; "
                             "set data.hierarchy (e.g. mod:5)")
        return h

    def _is_split(self) -> bool:
        return self.hierarchy is not None and self.hierarchy.kind == "split"

    def _num_classes(self) -> int:
        if self.cfg.data.labels == "coarse":
            return self.hierarchy.num_coarse
        if self._is_split():
            return self.hierarchy.num_fine
        return self.dataset.num_classes

    def train_targets(self, split: str) -> torch.Tensor:
        """int64 (N,) labels the net is trained on for ``split`` ("train"/"test"): fine, coarse or pseudo; on the
        train split after ``data.label_noise`` (:attr:`label_noise`; the test split is never corrupted)."""
        if split not in self._targets:
            noise = self.label_noise if split == "train" else None
            self._targets[split] = (torch.from_numpy(noise.labels.copy()) if noise is not None
                                    else self.clean_targets(split))
        return self._targets[split]

    def clean_targets(self, split: str) -> torch.Tensor:
        """int64 (N,) the labels of ``split`` at the training level (fine, coarse or pseudo) before label noise."""
        y = getattr(self.dataset, split).y
        if self.cfg.data.labels == "coarse":
            t = self.hierarchy.coarse_of(y)
        elif self._is_split():
            from nclab.data import split_labels

            # split:M:SEED shuffles by SEED; a plain split:M by the run seed
            t = split_labels(y, self.hierarchy, self.cfg.seed)
        else:
            t = y
        return torch.as_tensor(t).to(torch.int64)

    @property
    def label_noise(self):
        """The corrupted training labels (:class:`nclab.data.noise.NoisyLabels`: ``labels``, ``corrupted`` mask,
        ``clean``, each (N_train,)) under ``data.label_noise.rate`` > 0, else None."""
        if not hasattr(self, "_label_noise"):
            from nclab.data.noise import corrupt_labels

            nz = self.cfg.data.label_noise
            self._label_noise = (corrupt_labels(self.clean_targets("train").numpy(), self.num_classes, nz.rate,
                                                nz.kind, nz.seed) if nz.rate > 0 else None)
        return self._label_noise

    def _build_model(self):
        return build_model_for(self)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        scale = o.bias_lr_scale
        bn = {id(p) for mod in self.model.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
              for p in mod.parameters()}
        main = [p for p in self.model.parameters() if p.requires_grad and id(p) not in bn]
        bias = [p for p in self.model.parameters() if p.requires_grad and id(p) in bn]
        # BatchNorm params: lr * scale and weight_decay / scale, so the decay per step lr * wd is unchanged
        groups = [{"params": main, "lr_scale": 1.0, "weight_decay": o.weight_decay},
                  {"params": bias, "lr_scale": scale, "weight_decay": o.weight_decay / scale if scale else 0.0}]
        groups = [g for g in groups if g["params"]]
        if o.name == "sgd":
            return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum,
                                   nesterov=o.nesterov and o.momentum > 0)
        betas = tuple(o.betas)
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=o.lr, betas=betas)

    def _stats(self):
        if not self.cfg.data.normalize:
            return None, None
        if not hasattr(self, "_mean_std"):
            self._mean_std = self.dataset.channel_stats()
        return self._mean_std

    def _loader_for(self, x, y, batch_size, train: bool, shard: bool = False) -> BatchIterator:
        mean, std = self._stats()
        aug = self.cfg.data.augment
        return BatchIterator(x, y, batch_size, shuffle=train, drop_last=train, seed=self.cfg.seed,
                             augment=Augment(aug.crop, aug.flip) if train and self.dataset.is_image else None,
                             mean=mean, std=std, device=getattr(self, "device", "cpu"),
                             channels_last=self.cfg.train.channels_last,
                             shard=(ddp.rank(), ddp.world_size()) if shard else None)

    def _loader(self, split: str, train: bool, shard: bool = False) -> BatchIterator:
        s = getattr(self.dataset, split)
        bs = self.cfg.optim.batch_size if train else self.cfg.train.eval_batch_size
        return self._loader_for(s.x, self.train_targets(split), bs, train, shard=shard or (train and self.distributed))

    def eval_loader(self, split: str, shard: bool = False) -> BatchIterator:
        """Batches of ``split`` in storage order, no augmentation; ``y`` = :meth:`train_targets`. ``shard``
        (under torchrun): only this rank's rows of each batch (:class:`BatchIterator` ``shard``)."""
        if split not in ("train", "test"):
            raise NclabError(f"split must be 'train' or 'test', got {split!r}")
        key = (split, True) if shard and self.distributed else split
        if key not in self._eval_loaders:
            self._eval_loaders[key] = self._loader(split, train=False, shard=key != split)
        return self._eval_loaders[key]

    def autocast(self) -> torch.autocast:
        """The bf16 autocast context of this run (disabled unless ``train.bf16``), for forward passes outside fit."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.train.bf16)

    # evaluation ----------------------------------------------------------------------------
    @property
    def tta_flip(self) -> bool:
        return self.cfg.train.tta == "flip" and self.dataset.is_image

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits used for evaluation: the plain forward pass, or with ``train.tta: flip`` the classifier
        applied to the mean penultimate features of ``x`` and its mirror image (= the mean of both logits)."""
        if not self.tta_flip:
            return self._fwd(x)
        return self.model.classifier(flip_mean_features(self.model, x))

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict[str, float]:
        """``{loss, acc}`` of the data loss (no penalties) in eval mode."""
        was = self.model.training
        self.model.eval()
        total, correct, n = 0.0, 0, 0
        lcfg = self.cfg.loss
        for x, y in self.eval_loader(split, shard=self.distributed):
            if not len(y):  # a rank's empty shard of a short last batch
                continue
            with self.autocast():
                z = self.eval_logits(x)
            total += float(losses.data_loss(lcfg.name, z, y, lcfg.label_smoothing)) * len(y)
            correct += int((z.argmax(1) == y).sum())
            n += len(y)
        if self.distributed:  # each rank evaluated its shard
            total, correct, n = ddp.sum_floats(total, correct, n)
            correct, n = int(correct), int(n)
        self.model.train(was)
        return {"loss": total / max(n, 1), "acc": correct / max(n, 1)}

    # checkpoints -------------------------------------------------------------------------
    def _ckpt_path(self, name: str = "last.pt") -> Path:
        return self.run.checkpoints / name

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/last.pt`` atomically (and ``epoch_XXXX.pt`` with ``train.keep_checkpoints``): model,
        optimiser, every RNG state, metrics and callback states, so a resume equals an uninterrupted run.
        Under torchrun only rank 0 writes (the ranks hold the same state)."""
        if self.distributed and not ddp.is_main():
            self._last_ckpt = (self.epoch, self._ckpt_path())
            return self._ckpt_path()
        state = {
            "epoch": self.epoch, "global_step": self.global_step,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(), "metrics": self.metrics, "elapsed_s": self._elapsed,
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in self.callbacks],
            "num_classes": self.num_classes, "lookahead": self.lookahead.average,
        }
        # the numbered copy first: a kill between the two writes then leaves last.pt one epoch behind (that epoch
        # is retrained and both are written again), never an epoch that is neither kept nor retrained
        if self.cfg.train.keep_checkpoints:
            atomic_torch_save(self._ckpt_path(f"epoch_{self.epoch:04d}.pt"), state)
        path = atomic_torch_save(self._ckpt_path(), state)
        self._last_ckpt = (self.epoch, path)
        return path

    def load_checkpoint(self, path: str | os.PathLike | None = None, *, model_only: bool = False) -> dict:
        """Restore everything ``save_checkpoint`` wrote (default ``checkpoints/last.pt``; loaded with
        ``weights_only=True`` and checked field by field); ``model_only``: just the network's weights (measuring
        commands). Returns the checkpoint's mapping."""
        path = Path(path) if path else self._ckpt_path()
        if not path.exists():
            raise NclabError(f"no checkpoint at {path}; start the run without --resume")
        state = read_checkpoint(path, map_location=self.device, resume=not model_only)
        if state.get("num_classes", self.num_classes if model_only else None) != self.num_classes:
            raise NclabError(f"checkpoint {path} is for {state.get('num_classes')} classes, the config gives "
                             f"{self.num_classes}; resume with the run's own config.yaml")
        fix = "resume with the run's own config.yaml (drop the --config/--set changes to model and optim)"
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:  # missing/unexpected keys, size mismatches: another architecture
            first = str(e).strip().splitlines()[1:2] or [str(e)]
            raise NclabError(f"checkpoint {path} holds another model than the config builds ({first[0].strip()}); "
                             f"{fix}") from None
        if model_only:
            return state
        saved = state["optimizer"]["param_groups"]
        now = self.optimizer.state_dict()["param_groups"]
        if len(saved) != len(now) or any(set(a) != set(b) for a, b in zip(saved, now)):
            raise NclabError(f"checkpoint {path} holds the state of another optimiser than optim.name="
                             f"{self.cfg.optim.name}; {fix}")
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state({**state["rng"], "torch": state["rng"]["torch"].cpu()})
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.metrics = list(state["metrics"])
        self._elapsed = float(state["elapsed_s"])
        self.lookahead.load(state.get("lookahead"), self.device)
        for cb, s in zip(self.callbacks, state.get("callbacks", [])):
            if s is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(s)
        self._last_ckpt = (self.epoch, path)
        return state

    def _write_metrics(self) -> None:
        import json

        if self.distributed and not ddp.is_main():
            return
        # strict JSON lines: a non-finite value (e.g. from a user callback) is written as null
        atomic_write_text(self.run.metrics_path, "".join(json.dumps(json_clean(r)) + "\n" for r in self.metrics))

    def _append_metrics(self, row: dict) -> None:
        import json

        if self.distributed and not ddp.is_main():
            return
        try:
            with open(self.run.metrics_path, "a") as f:
                f.write(json.dumps(json_clean(row)) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full disk's write error carries no file name: give it the one being written
            raise type(e)(e.errno, e.strerror or str(e), str(self.run.metrics_path)) from None

    # training ------------------------------------------------------------------------------
    def _start(self, resume: bool, force: bool) -> None:
        if not self.distributed:
            self._start_main(resume, force)
            return
        # rank 0 checks and prepares the run directory; its decision (or its error) reaches every rank
        resume = ddp.main_first(lambda: self._start_main(resume, force))
        if resume and not ddp.is_main():
            self.load_checkpoint()

    def _start_main(self, resume: bool, force: bool) -> bool:
        """Check and prepare the run directory, load the checkpoint on a resume; returns whether it resumed."""
        run = self.run
        holds_run = run.metrics_path.exists() or self._ckpt_path().exists()
        if (resume or force) and holds_run:  # a run's own folder only (never a user's folder of other files)
            remove_stale_temps(run.path)  # left by a kill mid-write: never read, only take space
        if resume and not self._ckpt_path().exists():
            say(f"no checkpoint in {run.checkpoints} yet: starting {run.path} from scratch")
            resume, force = False, True  # killed before the first checkpoint: nothing valid to keep
        if resume:
            old = run.read_config()
            changed = config_diff(old, self.cfg)
            if changed:
                say(f"note: resuming with config keys changed from the run's config.yaml: {', '.join(changed)}")
            self.load_checkpoint()
            say(f"resuming {run.path} from epoch {self.epoch} of {self.cfg.optim.epochs} "
                f"(checkpoint {self._ckpt_path()})")
            self._write_metrics()  # drop rows written after the checkpoint (the rerun rewrites them)
        else:
            if holds_run:
                if not force:
                    raise NclabError(f"run directory {run.path} already holds a run; pass --resume to continue it, "
                                     f"--force to overwrite, or choose another run directory "
                                     f"(train: --name or --run-dir; "
                                     f"reproduce/sweep: --out)")
                run.clear_outputs()  # the old run's files, including what experiments added to its folder
            run.path.mkdir(parents=True, exist_ok=True)
        run.write_config(self.cfg)
        run.write_run_info({
            "device": str(self.device), "dataset": self.dataset.name, "source": self.dataset.source,
            "checksum": self.dataset.checksum, "num_classes": self.num_classes,
            "hierarchy": self.hierarchy.to_dict() if self.hierarchy is not None else None,
            "labels": self.cfg.data.labels, "n_train": len(self.dataset.train), "n_test": len(self.dataset.test),
            "resumed_from_epoch": self.epoch if resume else None,
        }, resumed=resume)
        run.write_status("running", "", epoch=self.epoch, wall_time_s=self._elapsed, resumed=resume)
        if resume and self.epoch >= int(self.cfg.optim.epochs):
            say(f"{run.path} already trained all {self.epoch} epochs; "
                "nothing to train (raise optim.epochs to continue)")
        return resume

    def _nan_stop(self, epoch: int, step: int | None, value: float | str, what: str = "training loss") -> None:
        if self._last_ckpt:
            good = f"last good checkpoint: {self._last_ckpt[1]} (epoch {self._last_ckpt[0]})"
            self.metrics = [r for r in self.metrics if r["epoch"] <= self._last_ckpt[0]]
        else:
            good = "no checkpoint was written yet"
            self.metrics = []
        self._write_metrics()  # nothing after the last good checkpoint stays presented as valid
        where = f"epoch {epoch + 1}, step {step + 1}" if step is not None else f"the end of epoch {epoch + 1}"
        msg = f"{what} became {value} at {where}; {good}; lower optim.lr or check the data"
        self.run.write_status("stopped_nan", msg, epoch=self._last_ckpt[0] if self._last_ckpt else 0,
                              wall_time_s=self._elapsed)
        raise NclabError(msg)

    def _check_state_finite(self, epoch: int) -> None:
        """The step losses are checked before each update, so the epoch's last update is checked here: a
        diverged model must not reach a checkpoint (one host sync). The optimiser's state counts too: finite
        weights with an overflowed momentum or second moment would make a checkpoint that diverges on resume."""
        vals = [torch.isfinite(v).all() for v in self.model.state_dict().values() if v.is_floating_point()]
        if vals and not bool(torch.stack(vals).all()):
            self._nan_stop(epoch, None, "non-finite", what="a model parameter or buffer")
        opt = [torch.isfinite(v).all() for st in self.optimizer.state.values() for v in st.values()
               if isinstance(v, torch.Tensor) and v.is_floating_point()]
        opt += [torch.isfinite(v).all() for v in self.lookahead.average or []]
        if opt and not bool(torch.stack(opt).all()):
            self._nan_stop(epoch, None, "non-finite", what="the optimiser state")

    def _time_is_up(self, first_epoch: int) -> bool:
        """``train.time_limit_s``: would one more epoch (at this call's mean epoch time) pass the limit?"""
        if self.epoch >= self.cfg.optim.epochs:
            return False
        up = self.time_slice.is_up(self._t_fit, self.epoch - first_epoch)
        return ddp.broadcast_object(up) if self.distributed else up  # rank 0's clock decides for all

    def _pause(self) -> None:
        """Checkpoint (unless this epoch's is written), status ``paused``, raise :class:`RunPaused`."""
        if not self._last_ckpt or self._last_ckpt[0] != self.epoch:
            self.save_checkpoint()
        spent = self.time_slice.spent()
        msg = (f"{self.run.path}: time limit of {self.cfg.train.time_limit_s:g} s reached after epoch "
               f"{self.epoch} of {self.cfg.optim.epochs} ({spent:.0f} s); continue with --resume (the limit is "
               "kept in the run's config: each resume runs one more slice; add --set train.time_limit_s=null to "
               "run to the end)")
        self.run.write_status("paused", msg, epoch=self.epoch, wall_time_s=self._elapsed)
        raise RunPaused(msg)

    def _check_finite(self, step_losses: torch.Tensor, start: int, stop: int, epoch: int, bar) -> None:
        """Stop at the first non-finite loss among steps ``start..stop-1`` of this epoch (one host sync). Under
        torchrun the ranks' shares are summed first: every rank sees the global batch losses and stops together."""
        if self.distributed:
            step_losses[start:stop] = ddp.all_reduce_sum(step_losses[start:stop])
        bad = ~torch.isfinite(step_losses[start:stop])
        if bool(bad.any()):
            step = start + int(bad.nonzero()[0, 0])
            bar.close()
            self._nan_stop(epoch, step, float(step_losses[step]))

    def _train_epoch(self, e: int) -> dict:
        c = self.cfg
        o, lcfg = c.optim, c.loss
        loader = self.train_loader
        loader.set_epoch(e)
        self.model.train()
        self.stem_freeze.on_epoch_start(e)
        spe, epochs = self.steps_per_epoch, o.epochs
        schedule = c.schedule.to_dict()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        step_losses = torch.zeros(spe, dtype=torch.float64, device=self.device)  # checked in slices
        checked = 0
        lr = o.lr
        head = self.model.head
        t0 = time.perf_counter()
        bar = progress(total=spe, desc=f"epoch {e + 1}/{epochs}", unit="step")
        for step, (x, y) in enumerate(loader):
            lr = lr_at(schedule, o.lr, e * spe + step, spe, epochs)
            for g in self.optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"]
            with self.autocast():
                if lcfg.lambda_h > 0 and self.distributed:
                    z, h0 = self._ddp_fwd(x, True)  # through DDP, so the gradients are averaged
                elif lcfg.lambda_h > 0:  # same ops as forward(), keeping the head input
                    h0 = self.model.backbone(x)
                    h = h0
                    for layer in head[:-1]:
                        h = layer(h)
                    z = head[-1](h)
                else:
                    z = self._fwd(x) if self._ddp_fwd is None else self._ddp_fwd(x)
            loss = losses.data_loss(lcfg.name, z, y, lcfg.label_smoothing)
            if lcfg.lambda_w > 0:
                loss = loss + losses.weight_penalty(head, lcfg.lambda_w)
            if lcfg.lambda_h > 0:
                loss = loss + losses.feature_penalty(h0, lcfg.lambda_h)
            lv = loss.detach()
            step_losses[step] = lv
            if self.distributed:
                # a rank's loss is the mean over its rows; DDP averages the ranks' gradients, so weighting by
                # rows * world / global rows gives the gradient of the global batch's mean loss (1 for equal shards)
                share = len(y) * ddp.world_size() / loader.global_batch_size(step)
                if share != 1.0:
                    loss = loss * share
                step_losses[step] = lv * (share / ddp.world_size())  # summed over the ranks in _check_finite
            if (step + 1) % self.nonfinite_check_every == 0 or step == spe - 1:
                self._check_finite(step_losses, checked, step + 1, e, bar)
                checked = step + 1
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.global_step = e * spe + step + 1
            self.lookahead.after_step(self.model, self.global_step)
            loss_sum += lv.double() * len(y)
            correct += (z.detach().argmax(1) == y).sum()
            seen += len(y)
            bar.update(1)
            if step % 10 == 9 or step == spe - 1:
                dt = time.perf_counter() - t0
                ips = seen / max(dt, 1e-9)
                left = ((epochs - e - 1) * spe + spe - step - 1) * dt / (step + 1)
                bar.set_postfix_str(f"loss={float(lv):.4f} img/s={ips:.0f} eta={_fmt_time(left)}", refresh=False)
        bar.close()
        if self.distributed:  # the epoch's statistics over all ranks' shards
            loss_sum, correct, seen = ddp.sum_floats(loss_sum, correct, seen)
            correct, seen = int(correct), int(seen)
        dt = time.perf_counter() - t0
        return {"lr": lr, "train_loss": float(loss_sum) / max(seen, 1), "train_acc": int(correct) / max(seen, 1),
                "train_time_s": dt, "images_per_s": seen / max(dt, 1e-9)}

    def fit(self, resume: bool = False, force: bool = False) -> dict[str, Any]:
        """Train to ``optim.epochs``; returns ``{"status", "epoch", "metrics" (last row), "checkpoint"}``.

        With ``train.time_limit_s`` it may instead checkpoint, set status ``paused`` and raise
        :class:`~nclab.utils.errors.RunPaused`; ``fit(resume=True)`` continues (same result as no pause).
        Holds the run directory's lock (:func:`nclab.runlock.run_lock`) throughout: a second writer fails at once."""
        if self.distributed and not ddp.is_main():  # rank 0 alone writes the run directory, so it alone locks it
            return self._fit(resume, force)
        with run_lock(self.run.path):  # the one writer of the run directory
            return self._fit(resume, force)

    def _fit(self, resume: bool, force: bool) -> dict[str, Any]:
        c = self.cfg
        epochs = c.optim.epochs
        self._start(resume, force)
        if self.distributed and self._ddp_fwd is None:
            self._ddp_fwd = ddp.wrap_ddp(_TrainForward(self.model, self._fwd), self.device,
                                         params_change=self.stem_freeze.changes_params)
        first_epoch, self._t_fit = self.epoch, time.perf_counter()
        try:
            self.loggers = build_loggers(c.train.loggers, self.run.path, c.name)
            for cb in self.callbacks:
                cb.on_train_start(self)
            for e in range(self.epoch, epochs):
                t0 = time.perf_counter()
                tr = self._train_epoch(e)
                if self.distributed:  # every rank evaluates rank 0's model (the one checkpointed): its BatchNorm
                    ddp.broadcast_buffers(self.model)  # statistics; DDP resends them before each step anyway
                self._check_state_finite(e)
                logs: dict[str, Any] = {"epoch": e + 1, "lr": tr["lr"], "train_loss": tr["train_loss"],
                                        "train_acc": tr["train_acc"]}
                if (e + 1) % c.train.eval_every == 0 or e + 1 == epochs:
                    ev = self.evaluate("test")
                    if not math.isfinite(ev["loss"]):  # finite weights can still overflow the logits
                        self._nan_stop(e, None, ev["loss"], what="test loss")
                    logs["test_loss"], logs["test_acc"] = ev["loss"], ev["acc"]
                for cb in self.callbacks:
                    cb.on_epoch_end(self, e + 1, logs)
                dt = time.perf_counter() - t0
                self._elapsed += dt
                prev = self.metrics[-1].get("train_time_total_s", 0.0) if self.metrics else 0.0
                train_total = prev + tr["train_time_s"]
                logs.update({"epoch_time_s": dt, "images_per_s": tr["images_per_s"], "time_s": self._elapsed,
                             "train_time_s": tr["train_time_s"], "train_time_total_s": train_total})
                self.epoch = e + 1
                self.metrics.append(logs)
                self._append_metrics(logs)
                for lg in self.loggers:
                    lg.log_metrics(logs, step=self.epoch)
                if self.epoch % c.train.checkpoint_every == 0 or self.epoch == epochs:
                    self._check_state_finite(e)  # again: callbacks ran since; only a finite state is kept
                    self.save_checkpoint()
                self.run.write_status("running", "", epoch=self.epoch, wall_time_s=self._elapsed)
                say(_epoch_line(logs, epochs))
                if self._time_is_up(first_epoch):
                    self._pause()
            for cb in self.callbacks:
                cb.on_train_end(self)
        except KeyboardInterrupt:
            last = self._last_ckpt[0] if self._last_ckpt else 0
            self.run.write_status("interrupted", f"interrupted; resume from epoch {last} with --resume",
                                  wall_time_s=self._elapsed)
            raise
        except RunPaused:
            raise
        except NclabError as err:
            if self.run.read_status().get("status") != "stopped_nan":
                self.run.write_status("failed", str(err), wall_time_s=self._elapsed)
            raise
        except Exception as err:
            if self.distributed and ddp.is_collective_error(err):  # a peer died or hung: one line, then stop
                msg = ddp.lost_peer_message(err, c.train.dist_timeout_s, self._last_ckpt and self._last_ckpt[0])
                self.run.write_status("failed", msg, wall_time_s=self._elapsed)
                raise NclabError(msg) from err
            try:
                self.run.write_status("failed", f"{type(err).__name__}: {err}", wall_time_s=self._elapsed)
            except OSError:  # e.g. the full disk that caused err: report err (its path), not this write's
                pass
            raise
        finally:
            for lg in self.loggers:
                lg.close()
            self.loggers = []
        self.run.write_status("complete", "", epoch=self.epoch, wall_time_s=self._elapsed)
        return {"status": "complete", "epoch": self.epoch, "metrics": self.metrics[-1] if self.metrics else {},
                "checkpoint": str(self._ckpt_path()), "run_dir": str(self.run.path)}


class _TrainForward(torch.nn.Module):
    """What DDP wraps: ``forward(x)`` = the (compiled) model's logits; ``forward(x, True)`` = (logits, head
    input) for the feature penalty (the same ops as the trainer's own lambda_h path)."""

    def __init__(self, model: torch.nn.Module, fwd: torch.nn.Module):
        super().__init__()
        self.model = model
        self._fwd = [fwd]  # not a submodule: the same parameters as model

    def forward(self, x: torch.Tensor, with_head_input: bool = False):
        if not with_head_input:
            return self._fwd[0](x)
        head = self.model.head
        h0 = self.model.backbone(x)
        h = h0
        for layer in head[:-1]:
            h = layer(h)
        return head[-1](h), h0


def _compiled(model: torch.nn.Module, mode, device: torch.device) -> torch.nn.Module:
    """``train.compile``: False = the eager model; True/"default" = ``torch.compile``; else that mode.

    ``reduce-overhead`` means CUDA graphs: on a CPU there are none, and inductor alone is slower than eager
    there for these models (docs/training.md), so on a CPU it keeps the eager model.
    """
    if mode is False or (mode == "reduce-overhead" and device.type != "cuda"):
        return model
    return torch.compile(model, mode=None if mode in (True, "default") else mode)


def _fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _epoch_line(logs: dict, epochs: int) -> str:
    parts = [f"epoch {logs['epoch']}/{epochs}", f"loss {logs['train_loss']:.4f}", f"acc {logs['train_acc']:.3f}"]
    if "test_acc" in logs:
        parts.append(f"test_acc {logs['test_acc']:.3f}")
    parts += [f"{logs['images_per_s']:.0f} img/s", f"{logs['epoch_time_s']:.1f}s"]
    return "  ".join(parts)
