"""SkinLesionClassifier: backbone + dropout/linear head, weighted CE + explicit weight penalty.

``data_manifest_sha256`` records which prepared split the weights were trained on, so evaluation
can warn when the data under a checkpoint has changed. Every hyper-parameter is a plain value
(the optimizer, scheduler and regularizer arrive as plain ``_target_`` dicts), so checkpoints
load with ``weights_only=True`` and carry their class names, preprocessing and the exact recipe
that produced them. ``load_from_checkpoint`` always loads with ``weights_only=True``
(:class:`skinlesion.core.checkpoints.SafeLoading`).
"""

from __future__ import annotations

from collections.abc import Sequence

import hydra.utils
import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchvision.transforms import v2

from skinlesion.core.checkpoints import SafeLoading
from skinlesion.models.backbones import get_backbone
from skinlesion.models.colour import shades_of_gray

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.01}
DEFAULT_REGULARIZER = {"_target_": "skinlesion.models.regularizers.WeightPenalty", "l1": 0.0, "l2": 0.0}
MONITOR = "val/f1_macro"
POST_FIT_BUFFERS = ("temperature", "confidence_threshold", "ood_", "set_", "other_")  # name prefixes


def batch_mixing(num_classes: int, mixup_alpha: float, cutmix_alpha: float) -> v2.Transform | None:
    """MixUp and/or CutMix on a batch (one of them per batch, chosen at random); None when both are off."""
    mixers = []
    if mixup_alpha > 0:
        mixers.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
    if cutmix_alpha > 0:
        mixers.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
    return v2.RandomChoice(mixers) if mixers else None


def stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision_macro": MulticlassPrecision(num_classes, average="macro"),
            "recall_macro": MulticlassRecall(num_classes, average="macro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class SkinLesionClassifier(SafeLoading, L.LightningModule):
    def __init__(
        self,
        class_names: Sequence[str],
        backbone: str = "efficientnet_lite0",
        pretrained: bool = True,
        dropout: float = 0.2,
        freeze_stages: int = 0,
        backbone_lr_scale: float = 1.0,
        image_size: int = 224,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        regularizer: dict | None = None,
        channels_last: bool = False,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        tta: bool = False,
        data_manifest_sha256: str | None = None,
        color_constancy: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.spec = get_backbone(backbone)
        self.backbone = self.spec.build(pretrained)
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(self.backbone.num_features, len(class_names))
        )
        self.penalty = hydra.utils.instantiate(dict(regularizer or DEFAULT_REGULARIZER))
        self.batch_mix = batch_mixing(len(class_names), mixup_alpha, cutmix_alpha)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        # the backbone's normalisation, for colour constancy on the [0, 1] image (models/colour.py);
        # not persistent: it follows from ``backbone``, and older checkpoints load without it
        self.register_buffer("input_mean", torch.tensor(self.spec.mean), persistent=False)
        self.register_buffer("input_std", torch.tensor(self.spec.std), persistent=False)
        # fitted on val after training (models/calibration.py); 1.0 = uncalibrated
        self.register_buffer("temperature", torch.ones(()))
        # abstention, fitted after training (models/abstention.py); these defaults never abstain.
        # The Mahalanobis statistics of each tapped stage are sized when fitted or loaded.
        self.register_buffer("confidence_threshold", torch.zeros(()))
        self.register_buffer("ood_threshold", torch.tensor(float("inf")))
        self.register_buffer("ood_scale", torch.zeros(0))
        for j in range(len(self.ood_taps)):
            self.register_buffer(f"ood_mean_{j}", torch.zeros(0))
            self.register_buffer(f"ood_precision_{j}", torch.zeros(0))
        # prediction sets (models/conformal.py): per-class probability thresholds and their
        # coverage level, fitted on val after training; empty / 0 = no sets (the top class alone)
        self.register_buffer("set_threshold", torch.zeros(0))
        self.register_buffer("set_level", torch.zeros(()))
        # the other-rash gate (models/other.py): a linear score on pooled features and its threshold;
        # empty / +inf = off
        self.register_buffer("other_centre", torch.zeros(0))
        self.register_buffer("other_weight", torch.zeros(0))
        self.register_buffer("other_bias", torch.zeros(()))
        self.register_buffer("other_threshold", torch.tensor(float("inf")))
        self.frozen: list[nn.Module] = []
        self.freeze(freeze_stages)
        n = len(class_names)
        self.train_metrics = stage_metrics(n, "train/")
        self.val_metrics = stage_metrics(n, "val/")
        self.test_metrics = stage_metrics(n, "test/")
        self.test_per_class = MetricCollection(
            {
                "precision": MulticlassPrecision(n, average=None),
                "recall": MulticlassRecall(n, average=None),
                "f1": MulticlassF1Score(n, average=None),
            }
        )
        self.test_outputs: dict[str, torch.Tensor] = {}
        self._test_batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # -- what travels with the model -----------------------------------------------------------
    @property
    def preprocessing(self) -> dict:
        return {
            "image_size": self.hparams.image_size,
            "mean": list(self.spec.mean),
            "std": list(self.spec.std),
            "resize": "shorter side to image_size, centre crop",
        }

    @property
    def ood_taps(self) -> list[nn.Module]:
        """Stages whose pooled outputs feed the out-of-distribution score: the deeper half of the
        backbone without its last stage, which fine-tuning specialises most (models/abstention.py)."""
        stages = self.backbone.stages
        chosen = stages[(len(stages) + 1) // 2 : len(stages) - 1] or stages[-1:]
        return [s[-1] if isinstance(s, nn.ModuleList) else s for s in chosen]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Post-fit buffers take the checkpoint's shapes; a checkpoint from before one of them existed
        loads with its default (uncalibrated, never abstains)."""
        for name, buffer in self._buffers.items():
            if buffer is None or not name.startswith(POST_FIT_BUFFERS):
                continue
            saved = state_dict.setdefault(prefix + name, buffer)
            if saved.shape != buffer.shape:
                self._buffers[name] = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- freezing ------------------------------------------------------------------------------
    def freeze(self, n_stages: int) -> None:
        """Freeze the first ``n_stages`` backbone stages (weights and batch-norm statistics)."""
        stages = self.backbone.stages
        if n_stages < 0 or n_stages > len(stages):
            raise ValueError(f"freeze_stages must be in 0..{len(stages)}, got {n_stages}")
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        self.frozen = list(stages[:n_stages])
        for module in self.frozen:
            module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen:
            module.eval()  # frozen stages keep their ImageNet batch-norm statistics
        return self

    # -- forward and losses --------------------------------------------------------------------
    def color_correct(self, x: torch.Tensor) -> torch.Tensor:
        """Shades of Gray colour constancy with norm ``color_constancy`` (0: off) on a normalised
        batch: the first step of every path into the backbone (``forward``, ``models.graph``)."""
        p = float(self.hparams.color_constancy)
        return shades_of_gray(x, self.input_mean, self.input_std, p) if p > 0 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; in eval mode with ``tta`` the mean of the logits of the image and its mirror."""
        return self.logits(self.color_correct(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` after colour correction (training corrects each photo before mixing them)."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.head(self.backbone(x))
        if self.hparams.tta and not self.training:
            logits = (logits + self.head(self.backbone(x.flip(-1)))) / 2
        return logits

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities: softmax of the temperature-scaled logits."""
        return (logits.float() / self.temperature.to(logits.device)).softmax(-1)

    def data_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, y, weight=self.class_weights, label_smoothing=self.hparams.label_smoothing
        )

    def penalty_term(self) -> torch.Tensor:
        return self.penalty(self.penalty.parameters(self.named_parameters())).to(self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        x = self.color_correct(x)  # per photo: a CutMix collage has no single illuminant
        target = y
        if self.batch_mix is not None:
            x, target = self.batch_mix(x, y)  # soft targets
        logits = self.logits(x)
        data_loss = self.data_loss(logits, target)
        penalty = self.penalty_term()
        loss = data_loss + penalty
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at step {self.global_step}")
        bs = len(y)
        self.log("train/data_loss", data_loss, on_step=False, on_epoch=True, batch_size=bs)
        self.log("train/penalty", penalty, on_step=False, on_epoch=True, batch_size=bs)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        self.train_metrics.update(logits.detach(), y)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def _eval_step(self, batch, metrics: MetricCollection, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        metrics.update(logits, y)
        return logits

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def on_test_epoch_start(self) -> None:
        self._test_batches = []

    def test_step(self, batch, batch_idx: int) -> None:
        logits = self._eval_step(batch, self.test_metrics, "test")
        self.test_per_class.update(logits, batch[1])
        self._test_batches.append((logits.float().cpu(), batch[1].cpu()))

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        for metric, values in self.test_per_class.compute().items():
            for name, value in zip(self.class_names, values, strict=True):
                self.log(f"test/{metric}/{name}", value)
        self.test_metrics.reset()
        self.test_per_class.reset()
        logits, targets = zip(*self._test_batches, strict=True) if self._test_batches else ((), ())
        self.test_outputs = {}
        if logits:
            logits = torch.cat(logits)
            self.test_outputs = {
                "logits": logits,
                "probs": self.probabilities(logits).cpu(),
                "targets": torch.cat(targets),
            }
        self._test_batches = []

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self.probabilities(self(x))

    # -- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = dict(self.hparams.optimizer or DEFAULT_OPTIMIZER)
        lr = float(cfg["lr"])
        groups = [
            {
                "params": list(self.backbone.parameters()),
                "lr": lr * self.hparams.backbone_lr_scale,
                "name": "backbone",
            },
            {"params": list(self.head.parameters()), "lr": lr, "name": "head"},
        ]
        optimizer = hydra.utils.instantiate(cfg)(groups)
        if not self.hparams.scheduler:
            return optimizer
        scheduler = hydra.utils.instantiate(dict(self.hparams.scheduler))(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": MONITOR},
        }
