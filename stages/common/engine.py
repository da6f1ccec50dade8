"""The training engine shared by every train stage (single process or torchrun/DDP)."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from stages.common.augment import AugmentedImages, BatchMixer, DeviceInput, sample_transform
from stages.common.checkpoint import load_resume_state, save_torch
from stages.common.dataset import PreparedData
from stages.common.errors import ParamsError
from stages.common.freezing import Freezer, freeze_batchnorm_stats
from stages.common.metrics import classification_metrics, weighted_f1
from stages.common.models import Preprocessing, count_parameters, to_channels_last
from stages.common.params import TrainParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        """torchrun's RANK/WORLD_SIZE/LOCAL_RANK; a plain run is rank 0 of 1."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(
            int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))
        )

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, so every rank stops (or not) together."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([int(flag)])
        dist.broadcast(value, src=0)
        return bool(value.item())


def _ignore_metrics(metrics: dict[str, float]) -> None:
    """The default of TrainRun.log_epoch: log nowhere."""


@dataclass
class TrainRun:
    """Everything one training run needs."""

    name: str
    params: TrainParams
    model: nn.Module
    preprocessing: Preprocessing
    freezer: Freezer
    data: PreparedData
    seed: int
    state_path: Path
    fingerprint: str
    log_epoch: Callable[[dict[str, float]], None] = _ignore_metrics  # rank 0; replayed on resume
    distributed: Distributed = field(default_factory=Distributed)


@dataclass
class TrainResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, float]]
    stopped_early: bool
    train_seconds: float


def build_optimizer(
    model: nn.Module, params: TrainParams, lr_scales: dict[str, float]
) -> torch.optim.Optimizer:
    """All parameters, frozen ones included (they get no gradient, so no update): when a
    group unfreezes, the optimizer picks it up with no rebuild. No weight decay on biases and
    normalisation weights; layer-wise LR decay through per-group learning rates."""
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        decay = parameter.ndim > 1
        groups.setdefault((lr_scales.get(name, 1.0), decay), []).append(parameter)
    param_groups = [
        {"params": members, "lr": params.lr * scale, "weight_decay": params.weight_decay * decay}
        for (scale, decay), members in sorted(groups.items(), key=lambda item: -item[0][0])
    ]
    if params.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=params.lr, momentum=params.momentum, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=params.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule: linear warm-up, then cosine, step or constant; or one-cycle."""
    total = params.epochs * steps_per_epoch
    warmup = min(params.warmup_epochs * steps_per_epoch, total - 1)
    if params.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total,
            pct_start=max(warmup / total, 0.05),
        )

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if params.scheduler == "cosine":
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * progress))
        if params.scheduler == "step":
            return params.gamma ** ((step // steps_per_epoch) // params.step_size)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    device_input: DeviceInput,
    batch_size: int,
    amp: bool = False,
    flip_tta: bool = False,
    progress: str | None = None,
) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 NHWC ``images``, in order; eval mode, no augmentation."""
    model.eval()
    outputs = []
    batches = device_input.batches(images, batch_size)
    total = -(-len(images) // batch_size)
    for inputs in tqdm(
        batches, total=total, desc=progress, disable=None if progress else True, leave=False
    ):
        with autocast(device_input.device, amp):
            logits = model(inputs).float()
            if flip_tta:
                logits = (logits + model(inputs.flip(-1)).float()) / 2
        outputs.append(logits.cpu())
    return torch.cat(outputs)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op context elsewhere."""
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


class Trainer:
    def __init__(self, run: TrainRun) -> None:
        self.run = run
        self.params = run.params
        self.distributed = run.distributed
        self.device = run.distributed.device()
        train_count = len(run.data.train.labels)
        if self.params.batch_size > train_count:
            raise ParamsError(
                f"models.{run.name}: train.batch_size {self.params.batch_size} is larger than "
                f"the training set ({train_count} images)"
            )
        if self.params.batch_size % self.distributed.world_size:
            raise ParamsError(
                f"train.batch_size {self.params.batch_size} must divide evenly over "
                f"{self.distributed.world_size} processes"
            )
        self.model = run.model.to(self.device)
        self.channels_last = to_channels_last(self.model, self.params.channels_last, self.device)
        self.device_input = DeviceInput(run.preprocessing, self.device, self.channels_last)
        self.mixer = BatchMixer(self.params.augment, len(run.data.classes))
        self.dataset = AugmentedImages(
            torch.from_numpy(run.data.train.images),
            torch.from_numpy(run.data.train.labels),
            sample_transform(self.params.augment),
        )
        self.sampler = DistributedSampler(
            self.dataset,
            num_replicas=self.distributed.world_size,
            rank=self.distributed.rank,
            shuffle=True,
            seed=run.seed,
            drop_last=True,
        )
        self.local_batch = self.params.batch_size // self.distributed.world_size
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.optimizer = build_optimizer(self.model, self.params, run.freezer.lr_scales())
        self.scheduler = build_scheduler(self.optimizer, self.params, self.steps_per_epoch)
        self.ema = (
            ModelEmaV3(self.model, decay=self.params.ema_decay) if self.params.ema_decay else None
        )
        self.amp = self.params.amp and self.device.type == "cuda"
        self.forward_model = self._wrap(self.model)

    def _wrap(self, model: nn.Module) -> nn.Module:
        """DDP (rebuilt when the trainable set changes) and optional torch.compile."""
        if self.distributed.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        if self.params.compile and self.device.type == "cuda":
            model = torch.compile(model)
        return model

    def loader(self, epoch: int) -> DataLoader:
        """Shuffling and augmentation are functions of (seed, epoch): a resumed run repeats
        exactly the epochs an uninterrupted one would have run."""
        self.sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.run.seed * 100_003 + epoch)
        workers = self.params.workers
        return DataLoader(
            self.dataset,
            batch_size=self.local_batch,
            sampler=self.sampler,
            drop_last=True,
            num_workers=workers,
            generator=generator,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        torch.manual_seed(self.run.seed * 100_003 + epoch)  # mixing, dropout, drop-path
        if self.run.freezer.apply(epoch) and self.distributed.world_size > 1:
            self.forward_model = self._wrap(self.model)
        self.model.train()
        freeze_batchnorm_stats(self.model)
        loss_sum, seen, predictions, labels = 0.0, 0, [], []
        started = time.perf_counter()
        bar = tqdm(
            self.loader(epoch),
            total=self.steps_per_epoch,
            desc=f"{self.run.name} epoch {epoch + 1}/{self.params.epochs}",
            disable=None if self.distributed.is_main else True,  # None: off when not a TTY
            leave=False,
        )
        for images, targets in bar:
            targets = targets.to(self.device, non_blocking=True)
            inputs, mixed = self.mixer(self.device_input(images), targets)
            with autocast(self.device, self.amp):
                logits = self.forward_model(inputs)
                # hard labels or soft (mixed) targets, with label smoothing
                loss = F.cross_entropy(
                    logits.float(), mixed, label_smoothing=self.params.label_smoothing
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.params.grad_clip:
                nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], self.params.grad_clip
                )
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            loss_sum += loss.item() * len(targets)
            seen += len(targets)
            predictions.append(logits.detach().argmax(1).cpu())
            labels.append(targets.cpu())
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        seconds = time.perf_counter() - started
        predicted, truth = torch.cat(predictions).numpy(), torch.cat(labels).numpy()
        _total, trainable = count_parameters(self.model)
        learning_rates = [group["lr"] for group in self.optimizer.param_groups]
        return {
            "train/loss": loss_sum / seen,
            "train/accuracy": float((predicted == truth).mean()),
            "train/f1_weighted": weighted_f1(truth, predicted),
            "train/lr": max(learning_rates),
            "train/lr_lowest": min(learning_rates),
            "train/trainable_params": trainable,
            "train/epoch_seconds": seconds,
            "train/images_per_second": seen * self.distributed.world_size / seconds,
        }

    def evaluation_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def validate(self) -> dict[str, float]:
        val = self.run.data.val
        logits = predict_logits(
            self.evaluation_model(), val.images, self.device_input, self.params.batch_size, self.amp
        )
        metrics = classification_metrics(logits, val.labels)
        return {f"val/{key}": value for key, value in metrics.items()}

    def state(
        self, epoch: int, best: dict[str, Any], history: list, bad_epochs: int, seconds: float
    ):
        return {
            "fingerprint": self.run.fingerprint,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best": best,
            "history": history,
            "bad_epochs": bad_epochs,
            "train_seconds": seconds,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    def fit(self) -> TrainResult:
        run, params = self.run, self.params
        state = load_resume_state(run.state_path, run.fingerprint)
        best: dict[str, Any] = {"val_loss": math.inf, "epoch": -1, "state_dict": None}
        history: list[dict[str, float]] = []
        bad_epochs, start_epoch, seconds = 0, 0, 0.0
        if state is not None:
            self.restore(state)
            best, history, bad_epochs = state["best"], state["history"], state["bad_epochs"]
            start_epoch, seconds = state["epoch"], state["train_seconds"]
            if self.distributed.is_main:
                for metrics in history:
                    run.log_epoch(metrics)
        stopped_early = bool(params.patience) and bad_epochs >= params.patience
        for epoch in range(start_epoch, params.epochs):
            if stopped_early:
                break
            metrics = self.train_epoch(epoch)
            metrics.update(self.validate())
            seconds += metrics["train/epoch_seconds"]
            history.append(metrics)
            improved = metrics["val/loss"] < best["val_loss"]
            if improved:
                weights = self.evaluation_model().state_dict()
                best = {
                    "val_loss": metrics["val/loss"],
                    "epoch": epoch,
                    "state_dict": {k: v.detach().cpu().clone() for k, v in weights.items()},
                }
                bad_epochs = 0
            else:
                bad_epochs += 1
            stopped_early = self.distributed.broadcast_flag(
                bool(params.patience) and bad_epochs >= params.patience
            )
            if self.distributed.is_main:
                run.log_epoch(metrics)
                log.info(
                    "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f f1 %.4f | "
                    "lr %.2e | %d trainable | %.0f img/s%s",
                    run.name,
                    epoch + 1,
                    params.epochs,
                    metrics["train/loss"],
                    metrics["train/accuracy"],
                    metrics["val/loss"],
                    metrics["val/accuracy"],
                    metrics["val/f1_weighted"],
                    metrics["train/lr"],
                    metrics["train/trainable_params"],
                    metrics["train/images_per_second"],
                    " *best*" if improved else "",
                )
                save_torch(
                    run.state_path, self.state(epoch + 1, best, history, bad_epochs, seconds)
                )
            if stopped_early and self.distributed.is_main:
                log.info(
                    "%s: early stop, val loss has not improved for %d epochs", run.name, bad_epochs
                )
        return TrainResult(best["state_dict"], best["epoch"], history, stopped_early, seconds)
