"""``nclab.track.CollapseTracker``: NC metrics inside any training loop (see :mod:`nclab.integrations.track`)."""

from nclab.integrations.track import CollapseTracker, split_batch

__all__ = ["CollapseTracker", "split_batch"]
