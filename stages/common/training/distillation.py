"""Knowledge distillation: the loss a student trains with, and the teacher that answers for each
batch.

The loss is Hinton et al.'s (2015): the KL divergence from the teacher's probabilities to the
student's at temperature T, scaled by T^2 so that its gradients keep their size as T changes,
mixed with the ordinary loss on the labels by ``alpha``. The KL divergence is the cross-entropy
against the teacher's probabilities less the teacher's entropy, a constant for the student: the
gradients are the cross-entropy's, and the value falls to 0 as the student matches the teacher.
(The cross-entropy itself would carry T^2 times the teacher's entropy in every logged loss,
about 33 at T=4: flat curves, and at high temperatures a value past the trainer's divergence
guard.)

The teacher answers for the very batch the student trains on: the same crop, flip and
CutMix/MixUp, each model at its own resolution ("function matching", Beyer et al. 2022, "A good
teacher is patient and consistent"). Logits precomputed once per training image would be one
teacher forward pass in all instead of one per step, but they answer for an image the student
never sees: with augmentation on, the student's view is another crop or mirror image every
epoch, and a mixed image's answer is not the mix of its parts' answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stages.common.models.inference import LoadedModel
from stages.common.plumbing.machine import autocast


@dataclass(frozen=True)
class TrainingLoss:
    """The loss of a training step: cross-entropy on the (possibly mixed) labels with label
    smoothing and, for a student, the teacher's share ``alpha`` at ``temperature``."""

    label_smoothing: float
    temperature: float = 1.0
    alpha: float = 0.0  # the teacher's share; 0: the labels alone (no teacher needed)

    def __call__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``logits``: the student's, float32; ``targets``: class indices or (N, classes)
        probabilities; ``teacher_logits``: the teacher's for the same inputs (alpha > 0)."""
        if self.alpha == 0:
            return self.hard(logits, targets)
        if teacher_logits is None:
            raise ValueError("a distillation loss with alpha > 0 needs the teacher's logits")
        soft = self.soft(logits, teacher_logits)
        if self.alpha == 1:
            return soft
        return self.alpha * soft + (1 - self.alpha) * self.hard(logits, targets)

    def hard(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def soft(self, logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """T^2 x KL(softmax(teacher's / T) || softmax(student's / T)), the batch's mean."""
        temperature = self.temperature
        target = F.softmax(teacher_logits.float() / temperature, dim=1)
        # probabilities, not log-probabilities, as the target: a teacher certain of a class
        # (probability 0 elsewhere) contributes 0 there, not 0 x log 0
        student = F.log_softmax(logits / temperature, dim=1)
        divergence = F.kl_div(student, target, reduction="batchmean")
        return divergence * temperature**2


class Teacher:
    """A trained model's logits for the student's training batches: eval mode (BatchNorm's
    running statistics, no dropout), no gradients, the model's own resolution and
    normalisation."""

    def __init__(self, loaded: LoadedModel, amp: bool) -> None:
        self.model = loaded.model.eval().requires_grad_(False)
        self.device_input = loaded.device_input
        self.amp = amp
        self.name = loaded.info.name

    @torch.no_grad()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float32 logits for float pixel values (N, 3, H, W), 0-255, on the teacher's device
        (DeviceInput.pixels: the batch as the student's augmentation and mixing left it)."""
        with autocast(pixels.device, self.amp):
            return self.model(self.device_input.prepare(pixels)).float()
