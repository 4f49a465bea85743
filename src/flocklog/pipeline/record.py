"""Re-export of :mod:`flocklog.record`: the execution record lives in the bottom layer (the stores use it too)."""

from flocklog.record import HOST, ExecutionRecord, _uuid4_fast, new_id

__all__ = ["HOST", "ExecutionRecord", "_uuid4_fast", "new_id"]
