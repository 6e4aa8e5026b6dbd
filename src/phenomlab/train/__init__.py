"""One training engine (resume, schedule, evaluation cadence, checkpoints, events) and the loop ``train`` on it."""

from .engine import CheckpointError, Engine, Records, TrainConfig, lr_factor
from .loop import History, Objective, TrainState, evaluate, loss_fn, make_optimizer, train

__all__ = [
    "CheckpointError",
    "Engine",
    "History",
    "Objective",
    "Records",
    "TrainConfig",
    "TrainState",
    "evaluate",
    "loss_fn",
    "lr_factor",
    "make_optimizer",
    "train",
]
