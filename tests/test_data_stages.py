"""prepare, validate and eda run as DVC runs them: outputs, bad input, nothing lost."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile

from tests import synthetic
from tests.conftest import run_module, update_params


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prepare_validate_eda_outputs(project):
    update_params(project, data={"val_ratio": 0.2}, validate={"drift_tolerance": 1.0})
    for module in ("stages.prepare", "stages.validate", "stages.eda"):
        result = run_module(project, module)
        assert result.returncode == 0, result.stderr
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert manifest["counts"] == {"train": 240, "val": 60, "test": 100}
    assert manifest["source_kind"] == "image-folder" and manifest["skipped"] == []
    verdict = json.loads((project / "metrics/validate.json").read_text())
    assert verdict == {"passed": True, "hard_failures": 0, "warnings": 0}
    assert json.loads((project / "reports/validation.json").read_text())["test_in_train"] == 0
    prepared = json.loads((project / "metrics/prepare.json").read_text())
    assert prepared == {
        "train_images": 240,
        "val_images": 60,
        "test_images": 100,
        "skipped_images": 0,
    }
    for name in ("class_balance", "channel_histograms", "samples", "class_means"):
        assert (project / f"plots/eda/{name}.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (project / "reports/eda.md").read_text()
    assert "![Samples](../plots/eda/samples.png)" in markdown
    assert "| train | 240 |" in markdown


def test_prepare_is_deterministic(project):
    prepared = run_module(project, "stages.prepare")
    assert prepared.returncode == 0
    # every stage ends saying what it cost, from its process's start
    assert re.search(
        r"^INFO stage: prepare took [\d.]+ (s|min) \([\d.]+ (s|min) of it starting Python",
        prepared.stderr,
        re.M,
    )
    first = json.loads((project / "data/prepared/manifest.json").read_text())["content_sha256"]
    assert run_module(project, "stages.prepare").returncode == 0
    second = json.loads((project / "data/prepared/manifest.json").read_text())["content_sha256"]
    assert first == second


def test_failed_prepare_keeps_the_previous_outputs(project, tmp_path):
    assert run_module(project, "stages.prepare").returncode == 0
    before = digest(project / "data/prepared/cifar10.npz")
    update_params(project, data={"source": str(tmp_path / "missing.tar.gz")})
    # (check_params, which run.sh calls before DVC, refuses this path before anything runs)
    result = run_module(project, "stages.prepare")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: data.source: '{tmp_path / 'missing.tar.gz'}' does not exist")
    )
    assert digest(project / "data/prepared/cifar10.npz") == before
    assert not list((project / "data/prepared").glob(".*tmp"))


def test_truncated_archive_fails_cleanly(project, image_tar, tmp_path):
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(image_tar.read_bytes()[:5000])
    update_params(project, data={"source": str(truncated)})
    result = run_module(project, "stages.prepare")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is truncated or corrupt" in result.stderr
    assert not (project / "data/prepared/cifar10.npz").exists()


def test_validate_stops_on_leakage_and_names_the_images(project, image_folder, tmp_path):
    leaky = shutil.copytree(image_folder, tmp_path / "leaky")
    for index in range(5):  # five test images copied into train
        source = leaky / "test/airplane" / f"{index:04d}.png"
        shutil.copy(source, leaky / "train/airplane" / f"leak{index}.png")
    archive = tmp_path / "leaky.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(leaky, arcname="cifar")
    update_params(project, data={"source": str(archive)}, validate={"drift_tolerance": 1.0})
    assert run_module(project, "stages.prepare").returncode == 0
    result = run_module(project, "stages.validate")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "error: validate: 1 hard failure(s), see reports/validation.json: leakage"
    )
    assert "test[0]=" in line
    report = json.loads((project / "reports/validation.json").read_text())
    assert report["passed"] is False and report["test_in_train"] + report["test_in_val"] == 5


def test_bad_images_are_named_in_the_validate_report(project, image_folder, tmp_path):
    broken = shutil.copytree(image_folder, tmp_path / "broken")
    (broken / "train/dog/0155.png").write_bytes(b"junk")
    (broken / "test/bird/0025.png").write_bytes(
        synthetic.png_bytes(synthetic.make_images(1, 0)[0][0], "L")
    )
    update_params(project, data={"source": str(broken)}, validate={"drift_tolerance": 1.0})
    prepare = run_module(project, "stages.prepare")
    assert prepare.returncode == 0
    assert "train/dog/0155.png: does not decode" in prepare.stderr
    assert run_module(project, "stages.validate").returncode == 0
    report = json.loads((project / "reports/validation.json").read_text())
    assert report["skipped_images"] == 2
    assert "test/bird/0025.png (mode L, expected RGB)" in report["warning_messages"][0]
