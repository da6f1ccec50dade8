"""stages.predict on a user's own images: any size or mode, top-k, CSV/JSON, bad files listed."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.common.models.checkpoint import InferenceSettings, ModelCheckpoint
from tests import synthetic
from tests.conftest import run_module
from tests.test_evaluate import rewrite_metadata


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of 'user photos': large, grey, RGBA and palette images of the test classes,
    one unreadable file and a non-image file, in a nested folder."""
    folder = tmp_path_factory.mktemp("photos")
    images, labels = synthetic.make_images(2, 5)
    for index, (image, label) in enumerate(zip(images, labels)):
        big = Image.fromarray(image).resize((128, 128), Image.Resampling.NEAREST)
        mode = ("RGB", "L", "RGBA", "P")[index % 4]
        target = (
            folder / ("nested" if index % 2 else ".") / f"{synthetic.CLASSES[label]}_{index}.png"
        )
        target.parent.mkdir(exist_ok=True)
        big.convert(mode).save(target)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def predict(project: Path, *args: str):
    return run_module(project, "stages.predict", *args)


def test_a_folder_of_any_images_to_csv(trained_project, photos):
    result = predict(trained_project, "resnet", str(photos), "--top-k", "3", "--out", "p.csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((trained_project / "p.csv").open()))
    assert len(rows) == 21  # 20 images and the broken one, the .txt is not an image
    broken = next(row for row in rows if row["file"].endswith("broken.jpg"))
    assert broken["error"].startswith("does not decode") and broken["class_1"] == ""
    good = [row for row in rows if not row["error"]]
    assert len(good) == 20
    for row in good:
        probabilities = [float(row[f"probability_{k}"]) for k in (1, 2, 3)]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
        assert row["class_1"] in synthetic.CLASSES
    # the tiny model learned the synthetic classes: far more hits than chance (2 of 20)
    hits = sum(Path(row["file"]).name.startswith(row["class_1"]) for row in good)
    assert hits >= 6, hits
    assert (
        "broken.jpg: does not decode" in result.stderr and "20 image(s) classified" in result.stderr
    )


def test_json_output_and_a_checkpoint_path(trained_project, photos, tmp_path):
    checkpoint = tmp_path / "elsewhere.safetensors"
    shutil.copy(trained_project / "models/resnet/model.safetensors", checkpoint)
    one = next(photos.glob("*.png"))
    result = predict(trained_project, str(checkpoint), str(one), "--out", "p.json", "--top-k", "2")
    assert result.returncode == 0, result.stderr
    records = json.loads((trained_project / "p.json").read_text())
    assert len(records) == 1 and set(records[0]) >= {"class_1", "probability_2", "error"}


def test_the_fitted_temperature_is_used(trained_project, photos):
    """Temperature scaling flattens or sharpens probabilities; the ranking stays."""
    details = trained_project / "evaluation/resnet/details.json"
    details.parent.mkdir(parents=True, exist_ok=True)
    one = str(next(photos.glob("*.png")))
    outputs = {}
    for temperature in (1.0, 4.0):
        details.write_text(json.dumps({"calibration": {"temperature": temperature}}))
        assert predict(trained_project, "resnet", one, "--out", "t.json").returncode == 0
        outputs[temperature] = json.loads((trained_project / "t.json").read_text())[0]
    assert outputs[1.0]["class_1"] == outputs[4.0]["class_1"]
    assert outputs[4.0]["probability_1"] < outputs[1.0]["probability_1"]


def test_the_evaluations_tta_is_used_unless_overridden(trained_project, photos):
    """The temperature was fitted on the TTA logits evaluation scored, so predict averages the
    same views; --tta changes that."""
    details = trained_project / "evaluation/resnet/details.json"
    details.parent.mkdir(parents=True, exist_ok=True)
    details.write_text(json.dumps({"calibration": {"temperature": 1.0}, "tta": "flip_translate"}))
    one = str(next(photos.glob("*.png")))
    probabilities = {}
    for override in ([], ["--tta", "none"]):
        result = predict(trained_project, "resnet", one, "--out", "t.json", *override)
        assert result.returncode == 0, result.stderr
        assert (
            f"(TTA {'none' if override else 'flip_translate'}, temperature 1.00)" in result.stderr
        )
        probabilities[bool(override)] = json.loads((trained_project / "t.json").read_text())[0]
    details.unlink()
    assert probabilities[True]["probability_1"] != probabilities[False]["probability_1"]


def test_a_released_file_predicts_with_the_settings_it_carries(trained_project, photos, tmp_path):
    """A copy of the released model, anywhere, predicts with the TTA and temperature stored in
    it, as the model of params.yaml does with its evaluation's."""
    model = ModelCheckpoint.load(trained_project / "models/resnet/model.safetensors")
    settings = InferenceSettings(tta="flip", temperature=2.5)
    released = tmp_path / "shipped" / "model.safetensors"
    released.parent.mkdir()
    ModelCheckpoint(model.info.model_copy(update={"inference": settings}), model.weights).save(
        released
    )
    details = trained_project / "evaluation/resnet/details.json"
    details.parent.mkdir(parents=True, exist_ok=True)
    details.write_text(json.dumps({"calibration": {"temperature": 2.5}, "tta": "flip"}))
    one = str(next(photos.glob("*.png")))
    outputs = {}
    for name in ("resnet", str(released)):
        result = predict(trained_project, name, one, "--out", "r.json")
        assert result.returncode == 0, result.stderr
        assert "(TTA flip, temperature 2.50)" in result.stderr
        outputs[name] = json.loads((trained_project / "r.json").read_text())[0]
    assert outputs["resnet"]["probability_1"] == outputs[str(released)]["probability_1"]


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        ("nan", "error: --temperature: must be a finite number > 0, got nan"),
        ("inf", "error: --temperature: must be a finite number > 0, got inf"),
        ("-1", "error: --temperature: must be a finite number > 0, got -1.0"),
        ("0", "error: --temperature: must be a finite number > 0, got 0.0"),
    ],
)
def test_a_temperature_that_is_no_temperature_is_refused(
    trained_project, photos, temperature, expected
):
    result = predict(trained_project, "resnet", str(photos), "--temperature", temperature)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("stored", [-1.0, 0.0, float("nan"), float("inf"), "warm", None])
def test_a_stored_temperature_that_is_no_temperature_names_the_file(
    trained_project, photos, stored
):
    """A negative temperature would reverse the ranking silently; nan makes every probability
    nan. Evaluation never writes one; a damaged or edited details.json is refused."""
    details = trained_project / "evaluation/resnet/details.json"
    details.parent.mkdir(parents=True, exist_ok=True)
    details.write_text(json.dumps({"calibration": {"temperature": stored}, "tta": "none"}))
    result = predict(trained_project, "resnet", str(photos))
    details.unlink()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: evaluation/resnet/details.json: no usable TTA and temperature")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nosuchmodel", "x.png"], "error: nosuchmodel: neither a checkpoint file nor a trained"),
        (["resnet", "PHOTOS", "--out", "p.txt"], "error: --out: 'p.txt' must end in .csv or .json"),
        (["resnet", "EMPTY"], "error: inputs: no image files found"),
        (["PICKLE", "PHOTOS"], "not a safetensors file (looks like a pickle); refusing"),
        (
            ["resnet", "PHOTOS", "--batch-size", "0"],
            "error: --batch-size: must be 1 or more, got 0",
        ),
        (["resnet", "PHOTOS", "--top-k", "0"], "error: --top-k: must be 1 or more, got 0"),
        (["resnet", "PHOTOS", "--out", "DIR.json"], "out.json' is a directory"),
        (["resnet", "PHOTOS", "--out", "AFILE/p.csv"], "error: --out: cannot make the folder"),
        (["resnet", "MISSING"], "error: inputs: '"),
        (["ALIEN", "PHOTOS"], "its architecture 'resnet9000_from_the_future' is not one this"),
    ],
)
def test_bad_arguments_are_one_line(trained_project, photos, tmp_path, args, expected):
    (tmp_path / "empty").mkdir()
    pickle_file = tmp_path / "model.safetensors"
    pickle_file.write_bytes(b"\x80\x04\x95 a pickle")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "out.json").mkdir()
    alien = tmp_path / "alien.safetensors"
    shutil.copy(trained_project / "models/resnet/model.safetensors", alien)
    rewrite_metadata(alien, lambda info: info.update(arch="resnet9000_from_the_future"))
    substitutes = {
        "PHOTOS": str(photos),
        "EMPTY": str(tmp_path / "empty"),
        "PICKLE": str(pickle_file),
        "DIR.json": str(tmp_path / "out.json"),  # a directory where the output would go
        "AFILE/p.csv": str(tmp_path / "a-file" / "p.csv"),
        "MISSING": str(tmp_path / "no-such-photo.png"),
        "ALIEN": str(alien),
    }
    result = predict(trained_project, *(substitutes.get(arg, arg) for arg in args))
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert expected in lines[-1] and "Traceback" not in result.stderr
    assert "classified" not in result.stderr  # refused before the work


def test_a_named_pipe_among_the_photos_is_a_row_not_a_hang(trained_project, photos, tmp_path):
    folder = Path(shutil.copytree(photos, tmp_path / "photos"))
    os.mkfifo(folder / "pipe.png")
    result = predict(trained_project, "resnet", str(folder), str(folder / "pipe.png"))
    assert result.returncode == 0, result.stderr
    assert f"{folder / 'pipe.png'}: error: not a regular file (not read)" in result.stdout


def test_images_are_converted_as_cifar_was_made():
    from stages.common.data.images import decode_image

    image = Image.fromarray(np.full((90, 200, 4), 200, np.uint8), "RGBA")
    buffer = __import__("io").BytesIO()
    image.save(buffer, format="PNG")
    array, problem = decode_image(buffer.getvalue(), convert=True)
    assert problem == "" and array.shape == (32, 32, 3) and array.dtype == np.uint8
    assert decode_image(buffer.getvalue())[1] == "mode RGBA, expected RGB"  # prepare is strict


def test_corrupt_and_oversized_files_among_good_ones_are_rows_too(
    trained_project, photos, tmp_path
):
    """One corrupt file among good ones ended in a traceback with no rows for the good files; a
    13370x13370 PNG took 2.8 GB to decode."""
    folder = Path(shutil.copytree(photos, tmp_path / "photos"))
    good = (folder / "nested").glob("*.png").__next__().read_bytes()
    (folder / "avif.png").write_bytes(b"\x00\x00\x00\x1cftypavif" + good[16:])
    (folder / "dds.png").write_bytes(b"DDS |\x00\x00\x00" + good[8:])
    (folder / "cut.png").write_bytes(good[: len(good) // 3])
    huge = __import__("io").BytesIO()
    Image.new("L", (13370, 13370)).save(huge, "PNG")
    (folder / "huge.png").write_bytes(huge.getvalue())
    result = predict(trained_project, "resnet", str(folder), "--out", "rows.csv")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = {
        Path(row["file"]).name: row for row in csv.DictReader((trained_project / "rows.csv").open())
    }
    for name in ("avif.png", "dds.png", "cut.png", "broken.jpg"):
        assert rows[name]["error"].startswith("does not decode"), rows[name]
    assert rows["huge.png"]["error"].startswith("too many pixels (13370x13370")
    assert sum(not row["error"] for row in rows.values()) == 20  # every good file classified


def test_16_bit_and_float_grey_keep_their_levels_and_data_sets_refuse_them():
    from stages.common.data.images import decode_image

    def encoded(array: np.ndarray, file_format: str) -> bytes:
        buffer = __import__("io").BytesIO()
        Image.fromarray(array).save(buffer, file_format)
        return buffer.getvalue()

    sixteen = encoded(np.full((40, 40), 32768, np.uint16), "PNG")
    assert decode_image(sixteen, convert=True)[0].max() == 128  # was 255: saturated white
    floating = encoded(np.full((40, 40), 0.5, np.float32), "TIFF")
    assert decode_image(floating, convert=True)[0].max() == 128  # was 0: black
    assert decode_image(sixteen)[1] == "mode I;16, expected RGB"  # a data set's images: 8-bit
