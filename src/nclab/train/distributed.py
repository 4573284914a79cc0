"""torch.distributed helpers: process-group setup from torchrun's environment, rank queries, sharding.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`init_from_env` joins the process group
(``nccl`` on CUDA, ``gloo`` on CPU) with a collective timeout, so a rank that dies or hangs makes the others
raise instead of wait forever. Without torchrun (``WORLD_SIZE`` unset or 1) nothing here starts a process
group: :func:`active` is false and every helper is a cheap no-op (rank 0 of 1), so single-process code
paths stay exactly as they were.

Sharding: rank ``r`` of ``W`` takes rows ``[r*b//W, (r+1)*b//W)`` of each global batch of ``b`` rows
(:func:`shard_bounds`), so the global batch, its order and its augmentation are those of one process.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Callable, Iterator, TypeVar

import torch

from nclab.rundir import RunDir
from nclab.utils.errors import NclabError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 300.0
# joining the group and each rank's setup (data loading, which may decode a dataset on one node and hit a cache
# on another) may take far longer than a collective should: they get this long (see ready())
STARTUP_TIMEOUT_S = 1800.0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (torchrun sets it); 1 when unset."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise NclabError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun") from None


def active() -> bool:
    """True when a process group of more than one rank is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def env_rank() -> int:
    """This process's rank as torchrun announces it (``RANK``), before the process group is joined; 0 in one
    process. Code that must decide who writes before :func:`init_from_env` (the run lock) uses this."""
    if env_world_size() <= 1:
        return 0
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        raise NclabError(f"RANK={os.environ['RANK']!r} is not an integer; launch with torchrun") from None


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes run directories, checkpoints and reports."""
    return rank() == 0


def init_from_env(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``).

    Returns True when running distributed. ``WORLD_SIZE`` unset or 1: does nothing and returns False.
    Backend: ``nccl`` for a CUDA ``device`` (each rank on GPU ``LOCAL_RANK``), else ``gloo``. Joining and the
    collectives up to :func:`ready` wait up to ``max(timeout_s, STARTUP_TIMEOUT_S)``; after ``ready(timeout_s)``
    every collective waits ``timeout_s``: a peer that died or hangs raises on the others after it.
    Called again in the same process it keeps the existing group. Non-main ranks are made quiet (no progress
    bars, no duplicated messages)."""
    import torch.distributed as dist

    if env_world_size() <= 1:
        return False
    if not dist.is_available():
        raise NclabError("WORLD_SIZE > 1 but this torch build has no torch.distributed; install a standard torch")
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise NclabError(f"WORLD_SIZE is set but {', '.join(missing)} is not; start nclab with torchrun "
                             "(docs/distributed.md), not by setting WORLD_SIZE by hand")
        backend = "gloo"
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local >= torch.cuda.device_count():
                raise NclabError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s); "
                                 "use --nproc_per_node at most the number of GPUs")
            torch.cuda.set_device(local)
            backend = "nccl"
        startup = max(float(timeout_s), STARTUP_TIMEOUT_S) if _can_set_timeout() else float(timeout_s)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=startup))
    if dist.get_rank() != 0:
        from nclab.utils import progress

        progress.set_quiet(True)
    return dist.get_world_size() > 1


def _can_set_timeout() -> bool:
    import torch.distributed.distributed_c10d as c10d

    return hasattr(c10d, "_set_pg_timeout")


def ready(timeout_s: float) -> None:
    """Every rank has finished its setup (a barrier under the startup timeout); from here on each collective
    waits at most ``timeout_s`` seconds. No-op when not distributed."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    if not active():
        return
    dist.barrier()
    if _can_set_timeout():
        c10d._set_pg_timeout(datetime.timedelta(seconds=float(timeout_s)))


@contextlib.contextmanager
def collective_timeout(timeout_s: float, then_s: float) -> Iterator[None]:
    """Collectives inside wait up to ``timeout_s`` (e.g. the other ranks waiting for rank 0's long analysis),
    those after it ``then_s`` again. No-op when not distributed or where torch cannot change the timeout."""
    if not active() or not _can_set_timeout():
        yield
        return
    import torch.distributed.distributed_c10d as c10d

    c10d._set_pg_timeout(datetime.timedelta(seconds=float(timeout_s)))
    try:
        yield
    finally:
        c10d._set_pg_timeout(datetime.timedelta(seconds=float(then_s)))


def local_device(device: torch.device) -> torch.device:
    """The device this rank works on: ``cuda:LOCAL_RANK`` for CUDA under torchrun, else ``device``."""
    if device.type == "cuda" and active():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def shutdown() -> None:
    """Leave the process group (end of a command); no-op when none was started."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a batch of ``n`` rows that rank ``r`` of ``w`` takes (default: this rank)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    return r * n // w, (r + 1) * n // w


def _comm_device(t: torch.Tensor) -> torch.Tensor:
    """NCCL reduces CUDA tensors only; gloo CPU ones."""
    import torch.distributed as dist

    want = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return t.to(want)


def all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """The element-wise sum of ``t`` over all ranks (a new tensor on ``t``'s device, same dtype); ``t`` itself
    when not distributed. Every rank receives the same values."""
    import torch.distributed as dist

    if not active():
        return t
    buf = _comm_device(t.detach().clone())
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    return buf.to(t.device)


def all_reduce_max(t: torch.Tensor, group=None) -> torch.Tensor:
    """The element-wise maximum of ``t`` over all ranks (``t`` itself when not distributed)."""
    import torch.distributed as dist

    if not active():
        return t
    buf = _comm_device(t.detach().clone())
    dist.all_reduce(buf, op=dist.ReduceOp.MAX, group=group)
    return buf.to(t.device)


def sum_floats(*values: float) -> list[float]:
    """Python numbers summed over all ranks in float64 (one collective); unchanged when not distributed."""
    if not active():
        return [float(v) for v in values]
    return all_reduce_sum(torch.tensor(values, dtype=torch.float64)).tolist()


def gather_rows(t: torch.Tensor, dst: int = 0) -> torch.Tensor | None:
    """The rows (dim 0) of ``t`` from every rank concatenated in rank order, on rank ``dst`` (``None`` on the
    others); ``t`` itself when not distributed. Ranks may hold different numbers of rows (e.g. per-sample
    features of their shards, gathered for clustering on rank 0); the other dims and the dtype must agree."""
    import torch.distributed as dist

    if not active():
        return t
    n = all_reduce_max(torch.tensor([0] * world_size(), dtype=torch.int64).index_fill_(0, torch.tensor([rank()]),
                                                                                        t.shape[0]))
    sizes = n.tolist()
    buf = _comm_device(t.detach())
    pad = torch.zeros((max(sizes) - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=buf.device)
    buf = torch.cat([buf, pad]).contiguous()
    bins = [torch.empty_like(buf) for _ in sizes] if rank() == dst else None
    dist.gather(buf, bins, dst=dst)
    if rank() != dst:
        return None
    return torch.cat([b[:k] for b, k in zip(bins, sizes)]).to(t.device)


def gather_in_order(positions: torch.Tensor, n: int, *tensors: torch.Tensor, dst: int = 0
                    ) -> list[torch.Tensor] | None:
    """Per-row ``tensors`` of every rank put back together in their original order on rank ``dst``: row ``i`` of
    this rank's ``tensors[j]`` is row ``positions[i]`` (int, (m,)) of an ``n``-row whole, e.g. the features of this
    rank's rows of sharded batches (:meth:`nclab.data.batches.BatchIterator.local_order`). Every row ``0..n-1`` must
    come from exactly one rank. Returns the list of ``n``-row tensors on rank ``dst`` and ``None`` on the others;
    not distributed: ``tensors`` placed by ``positions`` (the identity for an unsharded iterator). Collectives:
    :func:`gather_rows` (one for ``positions``, one per tensor), each under the process group's timeout."""
    pos = gather_rows(positions.detach().to("cpu", torch.int64), dst)
    parts = [gather_rows(t, dst) for t in tensors]
    if pos is None:
        return None
    if pos.numel() != n or not torch.equal(torch.sort(pos).values, torch.arange(n)):
        raise NclabError(f"gather_in_order: the ranks hold {pos.numel()} rows that are not each of rows 0..{n - 1} "
                         "once; every row must come from exactly one rank")
    out = []
    for t in parts:
        o = torch.empty_like(t)
        o[pos.to(t.device)] = t
        out.append(o)
    return out


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers of ``module`` (BatchNorm running statistics) to every rank, in place; no-op when
    not distributed. DDP sends rank 0's buffers to the others at the start of each training forward, so after the
    last step each rank holds its own update of them: before the ranks evaluate shards of one model, this makes it
    the model rank 0 checkpoints."""
    import torch.distributed as dist

    if not active():
        return
    for b in module.buffers():
        buf = _comm_device(b.detach())
        dist.broadcast(buf, src=src)
        if rank() != src:
            b.copy_(buf.to(b.device))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects; ``obj`` itself when not distributed)."""
    import torch.distributed as dist

    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(timeout_s: float | None = None) -> None:
    """Wait for every rank. With gloo and ``timeout_s`` it is a monitored barrier: a rank that does not arrive
    in time is named in the error. No-op when not distributed."""
    import torch.distributed as dist

    if not active():
        return
    if timeout_s is not None and dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=float(timeout_s)))
    else:
        dist.barrier()


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result to every rank; if it raised :class:`NclabError` on rank 0,
    every rank raises the same message (so a bad run directory stops all ranks with one line, none hangs)."""
    if not active():
        return fn()
    out: tuple[str, Any] = ("ok", None)
    err: BaseException | None = None
    if is_main():
        try:
            out = ("ok", fn())
        except NclabError as e:
            out, err = ("error", str(e)), e
        except BaseException as e:  # the others must not wait for a result that never comes
            out, err = ("error", f"rank 0 failed: {type(e).__name__}: {e}"), e
    out = broadcast_object(out)
    if err is not None:
        raise err
    if out[0] == "error":
        raise NclabError(out[1])
    return out[1]


def is_collective_error(err: BaseException) -> bool:
    """An error raised by a collective whose peers died, hung past the timeout or closed the connection."""
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    if not isinstance(err, RuntimeError):
        return False
    text = str(err).lower()
    return any(w in text for w in ("gloo", "nccl", "timed out", "connection closed", "connection reset",
                                   "broken pipe", "peer"))


def lost_peer_message(err: BaseException, timeout_s: float, last_epoch: int | None) -> str:
    """One line for a rank whose collective failed: what happened and how to continue."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
    where = f"the last checkpoint is epoch {last_epoch}" if last_epoch else "no checkpoint was written yet"
    return (f"rank {rank()} of {world_size()}: a collective failed ({type(err).__name__}: {first}); another rank "
            f"died or did not answer within train.dist_timeout_s={timeout_s:g} s; {where}; rerun the same torchrun "
            "command with --resume (any number of ranks)")


class ReadOnlyRunDir(RunDir):
    """A :class:`RunDir` whose ``write_*`` methods do nothing: what ranks other than 0 use (the readers work)."""

    def write_config(self, *args, **kwargs) -> None:
        return None

    def write_run_info(self, *args, **kwargs) -> None:
        return None

    def write_status(self, *args, **kwargs) -> None:
        return None

    def write_results(self, *args, **kwargs) -> None:
        return None

    def clear_outputs(self) -> None:
        return None


def run_dir_for_rank(path) -> RunDir:
    """The run directory this rank uses: the real one on rank 0, a :class:`ReadOnlyRunDir` elsewhere (only
    rank 0 writes the run directory)."""
    return RunDir(path) if is_main() else ReadOnlyRunDir(path)


def wrap_ddp(module: torch.nn.Module, device: torch.device, params_change: bool = False) -> torch.nn.Module:
    """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over the ranks in
    backward; parameters broadcast from rank 0 on construction). ``params_change``: some parameter stops
    getting a gradient during training (a frozen stem bias), so DDP must look for unused parameters each step."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=params_change)
