"""What a phenomenon's ``run`` gets: seed, device, run folder, metric logging, resumable training and work."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..seeding import derive_seed, generator


class RunContext:
    """What a phenomenon's ``run`` gets: seed, device, a run folder, logging and resumable training.

    ``ctx.train(name, model, data, train_cfg)`` wraps :func:`phenomlab.train.train` with a checkpoint
    ``<run_dir>/<name>.ckpt`` and logs metrics as ``<name>/<metric>``: an interrupted run resumes each
    named training where it stopped, and a finished one is not repeated.
    """

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        run_dir: str | Path | None = None,
        store: Any = None,
        run_id: str | None = None,
        progress: bool = False,
        on_log: Callable[[int, Mapping[str, float]], None] | None = None,
    ) -> None:
        self.seed = int(seed)
        self.on_log = on_log  # e.g. a tracker streaming the run (``phenomlab run --log tensorboard``)
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.store = store
        self.run_id = run_id
        self.progress = progress

    def seed_for(self, *salt: int | str) -> int:
        """A child seed for one part of the run (data, init of model k, ...)."""
        return derive_seed(self.seed, *salt)

    def generator(self, *salt: int | str) -> torch.Generator:
        return generator(self.seed_for(*salt))

    def log(self, step: int, metrics: Mapping[str, float], prefix: str | None = None) -> None:
        if self.store is None or self.run_id is None:
            return
        named = {f"{prefix}/{k}" if prefix else k: v for k, v in metrics.items()}
        self.store.log_metrics(self.run_id, step, named)
        if self.on_log is not None:
            self.on_log(step, named)

    def checkpoint_path(self, name: str) -> Path | None:
        return None if self.run_dir is None else self.run_dir / f"{name}.ckpt"

    def train(
        self, name: str, model: nn.Module, train_data: tuple[torch.Tensor, torch.Tensor], cfg: Any, **kwargs: Any
    ) -> Any:
        from ..train import train

        def logger(step: int, metrics: Mapping[str, float]) -> None:
            self.log(step, metrics, prefix=name)

        label = f"{name}" if self.progress else False
        return train(
            model,
            train_data,
            cfg,
            logger=logger,
            checkpoint=self.checkpoint_path(name),
            seed=self.seed_for("train", name),
            progress=label,
            **kwargs,
        )

    def cached(self, name: str, compute: Callable[[], Any]) -> Any:
        """Resumable unit of work that is not a training loop: the value ``compute()`` returned in an
        earlier attempt of this run (saved under the run folder), else compute and save it now."""
        path = self.run_dir / f"{name}.part.pt" if self.run_dir is not None else None
        if path is not None and path.exists():
            try:
                # tensors and plain data only: a crafted file in a shared store must not run code on load
                return torch.load(path, weights_only=True)
            except Exception as exc:
                raise CheckpointError.unreadable(path, exc) from None
        value = compute()
        if path is not None:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            torch.save(value, tmp)
            os.replace(tmp, path)
        return value
