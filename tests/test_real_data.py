"""The real CIFAR-10 JPEG archive from ../shared, when it is there (always in CI)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REAL_DATA, copy_project, run_module, update_params

pytestmark = pytest.mark.skipif(not REAL_DATA.exists(), reason=f"{REAL_DATA} not present")


def test_prepare_and_validate_all_60000_real_images(tmp_path):
    project = copy_project(tmp_path / "project")
    update_params(project, data={"source": str(REAL_DATA)})
    for module in ("stages.prepare", "stages.validate"):
        result = run_module(project, module)
        assert result.returncode == 0, result.stderr
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert manifest["counts"] == {"train": 45000, "val": 5000, "test": 10000}
    assert manifest["classes"][:3] == ["airplane", "automobile", "bird"]
    assert manifest["per_class"]["test"] == [1000] * 10
    report = json.loads((project / "metrics/validate.json").read_text())
    assert report["passed"] is True
    assert report["train_drift"] < 0.01  # the JPEG copy keeps CIFAR-10's channel statistics
