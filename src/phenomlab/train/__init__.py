"""One training loop (``train``) and its configuration, reused by every phenomenon."""

from .loop import History, Objective, TrainConfig, TrainState, evaluate, loss_fn, lr_factor, make_optimizer, train

__all__ = [
    "History",
    "Objective",
    "TrainConfig",
    "TrainState",
    "evaluate",
    "loss_fn",
    "lr_factor",
    "make_optimizer",
    "train",
]
