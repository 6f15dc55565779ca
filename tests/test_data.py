import pytest
import torch

from bench import data
from bench.data import datasets
from bench.errors import UserError
from bench.data.synthetic import shapes
from support.datafiles import write_cifar10_files, write_mnist_files


def test_synthetic_is_deterministic_for_a_seed_and_differs_across_seeds():
    x1, y1 = shapes(200, seed=3)
    x2, y2 = shapes(200, seed=3)
    x3, _ = shapes(200, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


def test_synthetic_has_ten_balanced_classes_of_3x16x16_pixels_in_unit_range():
    d = data.load("synthetic")
    assert d.input_shape == (3, 16, 16) and d.num_classes == 10
    assert len(d.train_x) == datasets.SYNTHETIC_TRAIN and len(d.test_x) == datasets.SYNTHETIC_TEST
    assert torch.bincount(d.train_y).tolist() == [datasets.SYNTHETIC_TRAIN // 10] * 10
    assert 0 <= d.train_x.min() and d.train_x.max() <= 1


def test_limits_take_the_first_samples():
    full, cut = data.load("synthetic"), data.load("synthetic", limit_train=100, limit_test=30)
    assert len(cut.train_x) == 100 and len(cut.test_x) == 30
    assert torch.equal(cut.train_x, full.train_x[:100])


def test_standardized_has_zero_mean_unit_variance_per_channel_on_train():
    d = data.load("synthetic", limit_train=500).standardized
    assert torch.allclose(d.train_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(d.train_x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_shuffled_batches_cover_every_sample_once_in_a_seeded_order():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    order = lambda seed: torch.cat([b for _, b in data.batches(x, y, 3, torch.Generator().manual_seed(seed))])
    assert sorted(order(0).tolist()) == list(range(10))
    assert torch.equal(order(0), order(0)) and not torch.equal(order(0), order(1))
    assert [len(b) for _, b in data.batches(x, y, 3)] == [3, 3, 3, 1]


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(UserError, match="unknown dataset 'imagenet' .*synthetic, fashion-mnist, mnist, cifar10"):
        data.load("imagenet")


def test_fashion_mnist_is_found_in_debians_location(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    write_mnist_files(debian, n_train=30, n_test=12, compress=True)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", debian)
    d = data.load("fashion-mnist", root=tmp_path / "cache")
    assert d.input_shape == (1, 28, 28) and len(d.train_x) == 30 and len(d.test_x) == 12
    assert d.train_y.tolist()[:11] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert 0 <= d.train_x.min() and d.train_x.max() <= 1 and d.train_x.max() > 0.9


def test_mnist_loads_from_a_local_root(tmp_path):
    write_mnist_files(tmp_path / "MNIST" / "raw", n_train=20, n_test=10)
    d = data.load("mnist", root=tmp_path, limit_train=15)
    assert d.input_shape == (1, 28, 28) and len(d.train_x) == 15 and d.num_classes == 10


def test_cifar10_loads_from_a_local_root(tmp_path, monkeypatch):
    write_cifar10_files(tmp_path, monkeypatch, n_per_batch=8)
    d = data.load("cifar10", root=tmp_path)
    assert d.input_shape == (3, 32, 32) and len(d.train_x) == 40 and len(d.test_x) == 8 and d.num_classes == 10


def test_missing_files_say_where_they_were_looked_for_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-here")
    with pytest.raises(UserError, match=f"fashion-mnist: .*{tmp_path}/FashionMNIST/raw.*dataset-fashion-mnist.*--download"):
        data.load("fashion-mnist", root=tmp_path)
    with pytest.raises(UserError, match=f"cifar10: .*{tmp_path}/cifar-10-batches-py.*--download"):
        data.load("cifar10", root=tmp_path)


def test_training_batches_follow_the_training_order_epoch_after_epoch_in_full_batches():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    drawn = data.training_batches(x, y, 4, seed=3)
    generator = torch.Generator().manual_seed(3)
    expected = [b for _ in range(3) for b in data.batches(x, y, 4, generator) if len(b[0]) == 4]
    for want_x, want_y in expected:  # 2 full batches of 4 per epoch of 10; the batch of 2 is left out
        got_x, got_y = next(drawn)
        assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y)
    assert len(expected) == 6 and len({tuple(b[1].tolist()) for b in expected}) > 2
    small = data.training_batches(x[:3], y[:3], 4, seed=0)
    assert [len(next(small)[0]) for _ in range(3)] == [3, 3, 3]  # fewer samples than a batch: all of them


def test_training_batches_of_a_rank_are_its_shard_of_the_training_order():
    x, y = torch.arange(11.0)[:, None], torch.arange(11)
    for rank in (0, 1):
        drawn = data.training_batches(x, y, 2, seed=5, rank=rank, world_size=2)
        generator = torch.Generator().manual_seed(5)  # each rank draws the same order
        expected = [b for _ in range(2) for b in data.batches(x, y, 2, generator, rank, 2) if len(b[0]) == 2]
        assert len(expected) == 4  # 5 samples per rank: 2 full batches an epoch
        for want_x, want_y in expected:
            got_x, got_y = next(drawn)
            assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y)
    first = {int(v) for rank in (0, 1) for v in next(data.training_batches(x, y, 2, 5, rank, 2))[1]}
    assert len(first) == 4  # the ranks' k-th batches never overlap
