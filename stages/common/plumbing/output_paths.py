"""Where every stage reads and writes, in one place, so writers, readers and dvc.yaml agree.

tests/test_dvc_yaml.py checks that dvc.yaml declares exactly these paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PREPARED_DIR = Path("data/prepared")
PREPARED_FILE = PREPARED_DIR / "cifar10.npz"
MANIFEST_FILE = PREPARED_DIR / "manifest.json"

METRICS_DIR = Path("metrics")
PREPARE_METRICS = METRICS_DIR / "prepare.json"  # image counts per split
VALIDATE_METRICS = METRICS_DIR / "validate.json"  # the verdict: passed, failures, warnings
VALIDATION_REPORT = Path("reports/validation.json")  # every number and message of validate

EDA_PLOTS = Path("plots/eda")
EDA_REPORT = Path("reports/eda.md")
EDA_DETAILS = Path("reports/eda.json")

COMPARE_METRICS = METRICS_DIR / "compare.json"
COMPARE_REPORT = Path("reports/comparison.md")
COMPARE_DETAILS = Path("reports/comparison.json")
COMPARE_PLOTS = Path("plots/compare")

RELEASE_DIR = Path("release")  # the model registry's artifact: the best single model
RELEASE_CHECKPOINT = RELEASE_DIR / "model.safetensors"
DRIFT_REFERENCE_NAME = "drift_reference.json"  # beside a served model: its test split's features
RELEASE_DRIFT_REFERENCE = RELEASE_DIR / DRIFT_REFERENCE_NAME

ONNX_MODEL = Path("export/model.onnx")  # the released model for onnxruntime (stages/export.py)
EXPORT_METRICS = METRICS_DIR / "export.json"  # agreement with PyTorch, file size
EXPORT_LATENCY = METRICS_DIR / "export-latency.json"  # timings: they vary from run to run

SWEEPS_DIR = Path("sweeps")
# Optuna studies: outside the git work tree, because `dvc exp apply` deletes untracked and
# ignored files there (a study.db in sweeps/ did not survive applying its best trial)
STUDIES_DIR = Path(".dvc/tmp/studies")


@dataclass(frozen=True)
class ModelPaths:
    """What train@<name> and evaluate@<name> write."""

    name: str

    @property
    def model_dir(self) -> Path:
        return Path("models") / self.name

    @property
    def checkpoint(self) -> Path:
        """The best weights and their metadata (safetensors; no code)."""
        return self.model_dir / "model.safetensors"

    @property
    def live_dir(self) -> Path:
        """DVCLive's per-epoch curves (git-tracked plot data)."""
        return Path("dvclive") / self.name

    @property
    def train_metrics(self) -> Path:
        return METRICS_DIR / "train" / f"{self.name}.json"

    @property
    def resume_dir(self) -> Path:
        """Resumable state while training runs (deliberately not a DVC output)."""
        return Path("checkpoints") / self.name

    @property
    def resume_state(self) -> Path:
        return self.resume_dir / "resume.safetensors"

    @property
    def evaluate_metrics(self) -> Path:
        return METRICS_DIR / "evaluate" / f"{self.name}.json"

    @property
    def evaluate_speed(self) -> Path:
        """Test images per second: a metric, apart from what compare depends on."""
        return METRICS_DIR / "speed" / f"{self.name}.json"

    @property
    def evaluation_dir(self) -> Path:
        return Path("evaluation") / self.name

    @property
    def predictions(self) -> Path:
        """Test logits, probabilities and the fitted temperature (for compare and predict)."""
        return self.evaluation_dir / "predictions.npz"

    @property
    def evaluation_details(self) -> Path:
        """Per-class scores, calibration tables, uncertainty: everything but the headline."""
        return self.evaluation_dir / "details.json"

    @property
    def evaluation_live(self) -> Path:
        """DVCLive's confusion matrix and risk-coverage data (git-tracked plot data)."""
        return self.evaluation_dir / "live"

    @property
    def evaluation_figures(self) -> Path:
        return Path("plots/evaluate") / self.name


def paths(name: str) -> ModelPaths:
    return ModelPaths(name)
