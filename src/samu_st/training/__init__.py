"""One training loop for every step: tasks plug a loss into :func:`train`.

See :mod:`samu_st.training.task` for the :class:`Task` and :class:`BatchSampler` contracts,
:mod:`samu_st.training.config` for the options, :mod:`samu_st.training.checkpoint` for the
on-disk format.
"""

from samu_st.training.checkpoint import CheckpointError, CheckpointManager
from samu_st.training.config import OptimConfig, ScheduleConfig, TrainConfig
from samu_st.training.lock import FolderLock, FolderLockedError
from samu_st.training.loop import NonFiniteLossError, TrainResult, process_rank_and_count, train
from samu_st.training.schedule import TriStage, default_param_groups, tri_stage
from samu_st.training.task import BatchSampler, LossOutput, Task, TaskBase

__all__ = [
    "BatchSampler",
    "CheckpointError",
    "CheckpointManager",
    "FolderLock",
    "FolderLockedError",
    "LossOutput",
    "NonFiniteLossError",
    "OptimConfig",
    "ScheduleConfig",
    "Task",
    "TaskBase",
    "TrainConfig",
    "TrainResult",
    "TriStage",
    "default_param_groups",
    "process_rank_and_count",
    "train",
    "tri_stage",
]
