"""Every data source form, and every bad source, through read_source."""

from __future__ import annotations

import os
import shutil
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from stages.common.data.sources import read_source
from stages.common.plumbing.errors import DataError
from tests import synthetic


def read(source: Path | str, on_bad_image: str = "skip", class_set: str = "cifar10"):
    return read_source(str(source), on_bad_image, class_set)


def test_image_folder_tree(image_folder):
    raw = read(image_folder)
    assert raw.classes == synthetic.CLASSES
    assert raw.train.images.shape == (300, 32, 32, 3) and raw.train.images.dtype == np.uint8
    assert np.bincount(raw.test.labels).tolist() == [10] * 10
    expected, _ = synthetic.make_images(30, 0)
    np.testing.assert_array_equal(raw.train.images[:30], expected[:30])  # PNG is lossless


def test_image_folder_tar_matches_tree(image_folder, image_tar):
    from_tree, from_tar = read(image_folder), read(image_tar)
    np.testing.assert_array_equal(from_tree.train.images, from_tar.train.images)
    np.testing.assert_array_equal(from_tree.test.labels, from_tar.test.labels)


def test_official_folder_and_archive(tmp_path):
    archive = synthetic.write_official_archive(tmp_path / "a", tmp_path / "cifar-10-python.tar.gz")
    from_archive = read(archive)
    from_folder = read(tmp_path / "a")  # parent of cifar-10-batches-py
    from_batches = read(tmp_path / "a" / "cifar-10-batches-py")
    assert from_archive.source_kind == "official-archive"
    assert from_archive.classes == synthetic.CLASSES
    assert from_archive.train.images.shape == (100, 32, 32, 3)
    assert from_archive.test.images.shape == (50, 32, 32, 3)
    for other in (from_folder, from_batches):
        np.testing.assert_array_equal(from_archive.train.images, other.train.images)
    # the CHW rows of the batches come back as HWC images
    expected, _ = synthetic.make_images(5, 1)
    np.testing.assert_array_equal(from_archive.test.images, expected)


def test_missing_source():
    with pytest.raises(DataError, match="data.source: 'nowhere/cifar' does not exist"):
        read("nowhere/cifar")


def test_folder_of_another_form(tmp_path):
    with pytest.raises(DataError, match="holds neither cifar-10-batches-py/ batches nor train"):
        read(tmp_path)


def test_file_that_is_no_archive(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a folder or a readable .tar"):
        read(path)


def test_truncated_archive(image_tar, tmp_path):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(image_tar.read_bytes()[: image_tar.stat().st_size // 2])
    with pytest.raises(DataError, match=r"archive '.*truncated.tar.gz' is truncated or corrupt"):
        read(truncated)


@pytest.fixture
def folder_copy(image_folder, tmp_path) -> Path:
    return Path(shutil.copytree(image_folder, tmp_path / "copy"))


def test_undecodable_image_is_skipped_and_recorded(folder_copy):
    (folder_copy / "train/cat/0095.png").write_bytes(b"not an image at all")
    raw = read(folder_copy)
    assert raw.skipped == [{"file": "train/cat/0095.png", "problem": raw.skipped[0]["problem"]}]
    assert raw.skipped[0]["problem"].startswith("does not decode")
    assert len(raw.train.labels) == 299


def test_undecodable_image_is_fatal_when_asked(folder_copy):
    (folder_copy / "train/cat/0095.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"train/cat/0095.png: does not decode .*fatal"):
        read(folder_copy, on_bad_image="fail")


@pytest.mark.parametrize(
    ("image", "mode", "problem"),
    [
        (np.zeros((40, 32, 3), np.uint8), "RGB", "size 32x40, expected 32x32"),
        (np.zeros((32, 32, 3), np.uint8), "L", "mode L, expected RGB"),
        (np.zeros((32, 32, 3), np.uint8), "RGBA", "mode RGBA, expected RGB"),
    ],
)
def test_wrong_size_or_mode(folder_copy, image, mode, problem):
    (folder_copy / "test/automobile/0015.png").write_bytes(synthetic.png_bytes(image, mode))
    assert read(folder_copy).skipped == [{"file": "test/automobile/0015.png", "problem": problem}]
    with pytest.raises(DataError, match=f"test/automobile/0015.png: {problem} \\(fatal"):
        read(folder_copy, on_bad_image="fail")


def test_class_missing_from_test(folder_copy):
    shutil.rmtree(folder_copy / "test/horse")
    with pytest.raises(DataError, match="has no test/horse/ folder"):
        read(folder_copy)


def test_empty_class(folder_copy):
    for path in (folder_copy / "train/bird").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="train/bird/ is an empty class"):
        read(folder_copy)


def test_extra_class_in_test(folder_copy):
    shutil.copytree(folder_copy / "test/airplane", folder_copy / "test/zebra")
    with pytest.raises(DataError, match=r"test/ has class folders not in train/: \['zebra'\]"):
        read(folder_copy)


def test_an_eleventh_class_is_refused_unless_any_class_set_is_asked(folder_copy):
    for split in ("train", "test"):
        shutil.copytree(folder_copy / split / "airplane", folder_copy / split / "zebra")
    with pytest.raises(DataError, match="holds 11 classes, not CIFAR-10's ten .*: zebra.*any"):
        read(folder_copy)
    assert read(folder_copy, class_set="any").classes[-1] == "zebra"


def test_images_in_nested_class_folders_are_read(folder_copy):
    nested = folder_copy / "train/cat/more"
    nested.mkdir()
    for path in sorted((folder_copy / "train/cat").glob("*.png"))[:5]:
        path.rename(nested / path.name)
    (folder_copy / "train/cat/notes.txt").write_text("not an image")
    raw = read(folder_copy)
    assert len(raw.train.labels) == 300 and raw.skipped == []
    assert raw.ignored == ["train/cat/notes.txt"]


def test_tar_cut_at_a_block_boundary_is_refused(image_folder, tmp_path):
    archive = tmp_path / "plain.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(image_folder, arcname="cifar")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: members[-3].offset])  # just before a header
    with pytest.raises(DataError, match=r"cut.tar' ends early .*truncated"):
        read(cut)


def test_a_tar_member_inflating_far_past_an_image_is_skipped_unread(image_folder, tmp_path):
    """512 MiB of zeros compress to half a megabyte (the review's 2 GiB member took 2.25 GB of
    memory): the member's declared size decides, before anything is decompressed."""
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_folder, arcname="cifar")
        member = tarfile.TarInfo("cifar/train/cat/bomb.png")
        member.size = 512 << 20
        tar.addfile(member, ZeroReader(member.size))
    tracemalloc.start()
    try:
        raw = read(archive)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raw.skipped == [
        {
            "file": "cifar/train/cat/bomb.png",
            "problem": "536,870,912 bytes, too large for a 32x32 image (not read)",
        }
    ]
    assert len(raw.train.labels) == 300
    assert peak < 64 << 20  # far below the member's 512 MiB


class ZeroReader:
    """A file object of ``size`` zero bytes, made as it is read."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, count: int = -1) -> bytes:
        count = self.left if count < 0 else min(count, self.left)
        self.left -= count
        return bytes(count)


def test_a_named_pipe_in_a_folder_source_is_skipped_not_read(folder_copy):
    os.mkfifo(folder_copy / "train" / "cat" / "pipe.png")
    raw = read(folder_copy)  # reading it would block forever
    assert {"file": "train/cat/pipe.png", "problem": "not a regular file (not read)"} in raw.skipped
