"""Image folders: the layout and split, decoding every format and colour mode, the transforms, the streamed
path's order and determinism against the in-memory path, the loader's own throughput and the input-bound
verdict, and every bad input as a one-line error naming the file."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import folder as folders
from bench.data.folder import FolderSettings, check_image, decode, index
from bench.data.stream import FolderStream, open_folder
from bench.measure.throughput import loader_throughput
from bench.measure.modes import Mode
from bench.results.report import bound_by, tables
from support.cli import run_cli, run_records
from support.folders import KINDS, folder, image
from support.records import documented_keys

FLAT = FolderSettings(image_size=16, num_workers=0, augment=False, data_path="stream")


def test_the_imagenet_layout_maps_classes_by_sorted_folder_name_and_ignores_other_files(tmp_path):
    root = folder(tmp_path / "f", classes=3, per_class=4, val_per_class=2)
    (root / "train" / "class1" / "README.txt").write_text("notes")
    (root / "train" / "class1" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "class2" / "deeper").mkdir()
    image(root / "train" / "class2" / "deeper" / "nested.jpg")
    found = index(root, FLAT)
    assert found.classes == ("class0", "class1", "class2") and found.layout == "train/val"
    assert len(found.train_files) == 13 and len(found.test_files) == 6 and found.ignored == 1
    for files, labels in ((found.train_files, found.train_labels), (found.test_files, found.test_labels)):
        for file, label in zip(files, labels):
            assert Path(file).relative_to(root).parts[1] == found.classes[label]
    assert sorted(np.bincount(found.train_labels)) == [4, 4, 5]


def test_a_folder_without_splits_holds_out_a_seeded_stratified_share_of_each_class(tmp_path):
    root = folder(tmp_path / "f", classes=3, per_class=10, val_per_class=None)
    settings = dataclasses.replace(FLAT, holdout=0.3)
    first, again = index(root, settings), index(root, settings)
    assert first.layout == "hold-out 0.3"
    assert np.bincount(first.test_labels).tolist() == [3, 3, 3] and np.bincount(first.train_labels).tolist() == [7, 7, 7]
    assert set(first.train_files).isdisjoint(first.test_files) and len({*first.train_files, *first.test_files}) == 30
    assert list(first.test_files) == list(again.test_files)  # one split per folder, whatever the run


@pytest.mark.parametrize("kind", KINDS, ids=[f"{k[1]}-{k[2]}{k[0]}" for k in KINDS])
def test_every_format_and_colour_mode_decodes_to_rgb_bytes(tmp_path, kind):
    path = image(tmp_path / f"x{kind[0]}", size=(24, 20), kind=kind)
    pixels = decode(str(path))
    assert pixels.shape == (3, 20, 24) and pixels.dtype == torch.uint8
    expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    # PIL and libjpeg-turbo differ by a few levels in YCbCr and CMYK; lossless formats agree exactly
    tolerance = 0 if kind[1] == "PNG" else 12
    assert (pixels.int() - expected.int()).abs().float().mean() <= tolerance


def test_a_16_bit_png_is_scaled_to_bytes(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((6, 8), 65535, dtype=np.uint16)).save(path)
    assert decode(str(path)).dtype == torch.uint8 and int(decode(str(path)).min()) == 255


@pytest.mark.parametrize("train", [True, False])
def test_the_transforms_give_square_crops_of_the_image_size_from_any_shape(tmp_path, train):
    root = folder(tmp_path / "f", classes=2, per_class=2, val_per_class=1, size=(50, 23))
    found = index(root, FLAT)
    images = folders.FolderImages(found.train_files, found.train_labels, 16, train)
    x, label = images[(0, 7)] if train else images[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and label == found.train_labels[0]


def _all(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in batches]


def test_streamed_batches_equal_the_in_memory_paths_at_the_same_seed_without_augmentation(tmp_path):
    root = folder(tmp_path / "f", classes=3, per_class=5, val_per_class=2)
    memory = open_folder(str(root), dataclasses.replace(FLAT, data_path="memory"))
    streamed = open_folder(str(root), dataclasses.replace(FLAT, num_workers=1))
    assert isinstance(streamed, FolderStream) and not isinstance(memory, FolderStream)
    assert memory.fields["data_path"] == "memory" and streamed.fields["data_path"] == "stream"
    mode = Mode(channels_last=True)
    a, b = memory.splits(mode), streamed.splits(mode)
    for seed in (0, 1):
        one, other = _all(a.train.epoch(4, torch.Generator().manual_seed(seed))), _all(b.train.epoch(4, torch.Generator().manual_seed(seed)))
        assert len(one) == len(other) == 4
        for (x1, y1), (x2, y2) in zip(one, other):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
            assert x2.is_contiguous(memory_format=torch.channels_last)
    for name in ("test", "probe"):
        for (x1, y1), (x2, y2) in zip(getattr(a, name).in_order(3), getattr(b, name).in_order(3), strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(a.train.head(5), b.train.head(5))


def _fingerprints(batches) -> list[list[float]]:
    return [sorted(x.sum(dim=(1, 2, 3)).tolist()) for x, _ in batches]


def test_augmented_batches_repeat_at_a_seed_whatever_the_workers_did_before_and_ranks_split_each_batch(tmp_path):
    root = folder(tmp_path / "f", classes=2, per_class=6, val_per_class=1)
    settings = dataclasses.replace(FLAT, augment=True, num_workers=1)
    data = open_folder(str(root), settings)

    def epochs(seed: int, warm: bool = False, rank: int = 0, world: int = 1, batch: int = 4):
        source = data.splits(Mode(), seed).train
        if warm:  # the workers run ahead of a pass abandoned after one batch: no effect on what follows
            next(iter(source.epoch(batch, torch.Generator().manual_seed(99))))
            source = data.splits(Mode(), seed).train
        generator = torch.Generator().manual_seed(seed)
        return [_all(source.epoch(batch, generator, rank, world)) for _ in range(2)]

    first, again = epochs(0), epochs(0, warm=True)
    for one, other in zip(first, again):
        assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(one, other))
    assert not torch.equal(first[0][0][0], first[1][0][0]) or not torch.equal(first[0][0][1], first[1][0][1])
    assert not torch.equal(first[0][0][0], epochs(1)[0][0][0])
    plain = dataclasses.replace(settings, augment=False)
    data = open_folder(str(root), plain)
    whole = _all(data.splits(Mode(), 0).train.epoch(4, torch.Generator().manual_seed(3)))
    ranks = [_all(data.splits(Mode(), 0).train.epoch(2, torch.Generator().manual_seed(3), r, 2)) for r in (0, 1)]
    for k, (x, _) in enumerate(whole):
        together = torch.cat([ranks[0][k][0], ranks[1][k][0]])
        assert sorted(together.sum(dim=(1, 2, 3)).tolist()) == pytest.approx(sorted(x.sum(dim=(1, 2, 3)).tolist()))


def test_the_loader_alone_is_timed_after_its_queue_is_used_up(tmp_path):
    root = folder(tmp_path / "f", classes=2, per_class=6, val_per_class=1, mixed=False)
    source = open_folder(str(root), dataclasses.replace(FLAT, num_workers=1)).splits(Mode()).train
    figures = loader_throughput(source, 4, seconds=0.05, seed=0)
    assert figures["loader_throughput"] > 0 and figures["loader_throughput_iqr"] >= 0


@pytest.mark.parametrize(
    "loop, ceiling, loader, verdict",
    [(90, 100, 1000, "model"), (50, 1000, 55, "input"), (30, 100, 100, "both"), (50, None, 55, "")],
)
def test_the_verdict_names_what_bounded_training(loop, ceiling, loader, verdict):
    assert bound_by(loop, ceiling, loader) == verdict


def test_a_streamed_run_records_the_loader_and_says_what_bounded_it(capsys, tmp_path, tiny_suite):
    root = folder(tmp_path / "f", classes=2, per_class=8, val_per_class=2, mixed=False)
    code, out, err = run_cli(
        capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--dataset", f"folder:{root}", "--image-size", "16",
        "--workers", "1", "--out", tmp_path / "runs", "--batch-size", "4",
    )
    assert code == 0, err
    (record,) = run_records(tmp_path / "runs")
    assert record["status"] == "ok", record["error"]
    assert set(record) <= documented_keys("classify", folder=True)
    assert record["dataset"] == "folder:f" and record["input_shape"] == [3, 16, 16] and record["dtype"] == "uint8"
    assert record["data_path"] == "stream" and record["num_workers"] == 1 and record["loader_throughput"] > 0
    assert record["augmentation"] == "random-resized-crop+flip" and record["normalization"] == "imagenet"
    assert record["train_samples"] == 16 and record["test_samples"] == 4 and record["phase_s"]["loader"] > 0
    assert "bound by" in out and "loader (samples/s)" in out


def test_a_model_cheap_beside_a_slow_transform_is_input_bound(capsys, tmp_path, tiny_suite, monkeypatch):
    root = folder(tmp_path / "f", classes=2, per_class=4, val_per_class=1, mixed=False)
    made = folders.transform

    def slow(size: int, train: bool):
        transform = made(size, train)
        if not train:
            return transform

        def slowly(x):
            time.sleep(0.03)
            return transform(x)

        return slowly

    monkeypatch.setattr(folders, "transform", slow)
    code, out, err = run_cli(
        capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--dataset", f"folder:{root}", "--image-size", "16",
        "--workers", "0", "--isolation", "none", "--out", tmp_path / "runs", "--batch-size", "4", "--epochs", "3",
    )
    assert code == 0, err
    (record,) = run_records(tmp_path / "runs")
    loop = record["train_loop_throughput"]
    assert loop < 0.5 * record["train_throughput"] and record["loader_throughput"] < 1 / 0.03
    assert bound_by(loop, record["train_throughput"], record["loader_throughput"]) == "input"
    assert "| input " in tables([record])


def _bad(tmp_path: Path) -> Path:
    return folder(tmp_path / "bad", classes=2, per_class=3, val_per_class=1, mixed=False)


def _truncated_jpeg(path: Path) -> None:
    whole = image(path.with_name("whole.tmp"), kind=KINDS[0]).read_bytes()
    path.with_name("whole.tmp").unlink()
    path.write_bytes(whole[: len(whole) // 2])


def _huge_jpeg(path: Path) -> None:
    """A JPEG whose header says 20,000 x 20,000 pixels (what the check reads; it is never decoded)."""
    data = bytearray(image(path, kind=KINDS[0]).read_bytes())
    at = data.index(b"\xff\xc0")  # start of frame: length (2), precision (1), height (2), width (2)
    data[at + 5 : at + 9] = (20000).to_bytes(2, "big") * 2
    path.write_bytes(bytes(data))


def _unreadable(path: Path) -> str:
    image(path)
    if os.geteuid() != 0:
        path.chmod(0)
        return "permission denied"
    path.unlink()
    path.symlink_to(path.with_name("gone.jpg"))  # root reads any file: a link to nothing cannot be read either
    return "cannot read it"


@pytest.mark.parametrize(
    "spoil, said",
    [
        (lambda p: _truncated_jpeg(p / "train/class0/img0.jpg"), "cut short (truncated)"),
        (lambda p: (p / "train/class0/img0.jpg").write_bytes(b"<html>not a picture</html>"), "not an image"),
        (lambda p: (p / "train/class1/img1.jpg").write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: _huge_jpeg(p / "val/class1/img0.jpg"), "20000 x 20000 pixels, over the limit"),
        (lambda p: _unreadable(p / "train/class1/img2.jpg"), "cannot read it"),
        (lambda p: Image.new("RGB", (8, 8)).save(p / "train/class0/img0.jpg", "GIF"), "a GIF image"),
    ],
    ids=["truncated", "not-an-image", "empty-file", "20000x20000", "unreadable", "gif-named-jpg"],
)
def test_a_bad_image_stops_the_run_before_training_naming_the_file_unless_skipped(capsys, tmp_path, tiny_suite, spoil, said):
    root = _bad(tmp_path)
    spoil(root)
    argv = ["run", "--suite", tiny_suite("cnn-baseline"), "--dataset", f"folder:{root}", "--image-size", "16",
            "--workers", "0", "--isolation", "none", "--out", tmp_path / "runs", "--batch-size", "2", "--epochs", "1"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(root) in err and said in err and "--skip-bad-images" in err
    assert not list((tmp_path / "runs").glob("*/records.jsonl"))


def test_skip_bad_images_goes_on_without_them_and_counts_them(capsys, tmp_path, tiny_suite):
    root = _bad(tmp_path)
    _truncated_jpeg(root / "train/class0/img0.jpg")
    _huge_jpeg(root / "val/class1/img0.jpg")
    image(root / "val/class1/img1.jpg")  # so that class1 keeps a validation image
    code, out, err = run_cli(
        capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--dataset", f"folder:{root}", "--image-size", "16",
        "--workers", "0", "--isolation", "none", "--out", tmp_path / "runs", "--batch-size", "2", "--epochs", "1",
        "--skip-bad-images",
    )
    assert code == 0, err
    (record,) = run_records(tmp_path / "runs")
    assert record["status"] == "ok" and record["images_skipped"] == 2
    assert record["train_samples"] == 5 and record["test_samples"] == 2
    examples = " ".join(record["images_skipped_examples"])
    assert "img0.jpg: a corrupt or cut short (truncated) image" in examples and "20000 x 20000 pixels" in examples


def test_measured_normalization_takes_the_training_images_statistics(tmp_path):
    root = folder(tmp_path / "f", classes=2, per_class=3, val_per_class=1, mixed=False)
    settings = dataclasses.replace(FLAT, normalize="measured", data_path="memory")
    data = open_folder(str(root), settings)
    assert data.fields["normalization"] == "measured on 6 training images"
    mean = data.train_x.mean(dim=(0, 2, 3))
    assert data.fields["normalize_mean"] == pytest.approx(mean.tolist(), abs=1e-5)
    standardized = data.splits().train.head(6)
    assert standardized.mean(dim=(0, 2, 3)).abs().max() < 1e-4 and standardized.std(dim=(0, 2, 3)).sub(1).abs().max() < 1e-3


@pytest.mark.parametrize(
    "spoil, said",
    [
        (lambda p: [f.unlink() for f in (p / "train/class1").iterdir()], "class folder {root}/train/class1 holds no images"),
        (lambda p: [f.unlink() for f in (p / "train/class1").iterdir()] and (p / "train/class1/notes.txt").write_text("x"),
         "holds no images (it holds 1 other file(s), e.g. notes.txt)"),
        (lambda p: (p / "val/class1").rename(p / "val/class9"), "the classes of train/ and val/ differ (only in train/: class1; only in val/: class9)"),
        (lambda p: __import__("shutil").rmtree(p / "val"), "has train/ but no val/"),
        (lambda p: [__import__("shutil").rmtree(p / s) for s in ("train", "val")], "holds no class folders"),
    ],
    ids=["empty-class", "class-of-other-files", "other-val-classes", "no-val", "no-classes"],
)
def test_a_malformed_folder_is_a_one_line_error_before_training(capsys, tmp_path, tiny_suite, spoil, said):
    root = _bad(tmp_path)
    spoil(root)
    code, out, err = run_cli(
        capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--dataset", f"folder:{root}", "--out", tmp_path / "runs",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and said.format(root=root) in err, err


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--dataset", "folder:"], "needs the folder's path"),
        (["--dataset", "folder:{tmp}/nowhere"], "nowhere: no such folder"),
        (["--image-size", "64"], "image_size: [data] settings"),
        (["--dataset", "folder:{root}", "--data-path", "memory"], "cannot augment"),
        (["--dataset", "folder:{root}", "--arch", "vae-mlp"], "generators train on data in memory"),
    ],
    ids=["no-path", "missing", "size-without-folder", "memory-with-augmentation", "generator-streamed"],
)
def test_impossible_folder_settings_are_one_line_errors(capsys, tmp_path, tiny_suite, argv, said):
    root = _bad(tmp_path)
    argv = [a.format(tmp=tmp_path, root=root) for a in argv]
    code, out, err = run_cli(capsys, "run", "--suite", tiny_suite("cnn-baseline"), *argv, "--out", tmp_path / "runs")
    assert code == 2 and len(err.strip().splitlines()) == 1 and said in err, err


def test_the_header_check_reads_webp_and_png_endings(tmp_path):
    for kind in (KINDS[1], KINDS[2]):
        path = image(tmp_path / f"x{kind[0]}", kind=kind)
        assert check_image(path, 10**8) is None
        path.write_bytes(path.read_bytes()[:-10])
        assert "cut short" in check_image(path, 10**8)


def test_the_example_script_writes_a_folder_the_suite_reads(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "example"
    done = subprocess.run(
        [sys.executable, "examples/make_image_folder.py", str(out), "--train", "2", "--val", "1", "--size", "32"],
        capture_output=True, text=True, cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    found = index(out, FLAT)
    assert len(found.classes) == 10 and len(found.train_files) == 20 and len(found.test_files) == 10
    assert Image.open(found.train_files[0]).size == (32, 32)
