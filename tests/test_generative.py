"""Generative models: the architectures' interface, FID and KID behaving as metrics, VAE and GAN training, the CLI."""

import dataclasses
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import architectures
from architectures.gan import GAN
from architectures.vae import VAE
from bench import data
from bench.results import aggregate, report
from bench.cli import main
from bench.measure.fid import calibration_images, sample_quality
from bench.tasks import TASKS, gan, generative, reference, vae
from bench.tasks.base import Diverged, RunContext
from bench.tasks.settings import FidSettings, GanSettings, VaeSettings
from support.settings import FAST_MEASURE, WINDOWED_MEASURE

CPU = torch.device("cpu")
SHAPES = [(1, 28, 28), (3, 32, 32)]

NAN_GAN = """
import torch
from torch import nn
import architectures
from architectures.gan import GAN

@architectures.register("gan-nan", task="gan", family="test", description="its generator gives NaN from step 4 on")
def build(input_shape, num_classes, latent_dim=8):
    class NanAfter3(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.calls = nn.Linear(latent_dim, input_shape[0] * input_shape[1] * input_shape[2]), 0

        def forward(self, z):
            self.calls += self.training
            images = torch.sigmoid(self.linear(z)).view(len(z), *input_shape)
            return images * float("nan") if self.training and self.calls > 3 else images

    discriminator = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], 1))
    return GAN(NanAfter3(), discriminator, latent_dim)
"""


@pytest.fixture(scope="module")
def shapes():
    """Synthetic shapes: enough training images for the reference classifier to tell the classes apart."""
    return data.load("synthetic", limit_train=1000, limit_test=300)


@pytest.fixture(scope="module")
def fid_settings(tmp_path_factory):
    cache = tmp_path_factory.mktemp("fid")
    return FidSettings(
        epochs=2, batch_size=25, schedule="constant", eval_batch_size=300, kid_subsets=10, cache_dir=str(cache)
    )


@pytest.fixture(scope="module")
def trained_reference(shapes, fid_settings):
    return reference.load_or_train(fid_settings, shapes, CPU)


def quality(trained_reference, real, fake, settings):
    features = trained_reference.features
    subsets, subset_size = settings.kid_subsets, settings.kid_subset_size
    return sample_quality(features, real, fake, settings.eval_batch_size, subsets, subset_size, 0)


def test_generators_are_registered_under_their_tasks():
    assert architectures.list_architectures(task="vae") == ["vae-conv", "vae-mlp"]
    assert architectures.list_architectures(task="gan") == ["gan-dcgan", "gan-mlp"]


@pytest.mark.parametrize("name", ["vae-conv", "vae-mlp"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_vae_builds_for_both_shapes_with_the_documented_interface(name, shape):
    model = architectures.create(name, shape, latent_dim=7).eval()
    x = torch.rand(3, *shape)
    mean, log_var = model.encode(x)
    assert model.latent_dim == 7 and mean.shape == log_var.shape == (3, 7)
    assert model.decode(mean).shape == (3, *shape)
    halves = sum(p.numel() for p in model.encoder.parameters()) + sum(p.numel() for p in model.decoder.parameters())
    assert halves == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["gan-dcgan", "gan-mlp"])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_gan_builds_for_both_shapes_with_the_documented_interface(name, shape):
    model = architectures.create(name, shape, latent_dim=9).eval()
    images = model.generator(torch.randn(3, 9))
    assert model.latent_dim == 9 and images.shape == (3, *shape)
    assert 0 <= images.min() and images.max() <= 1
    assert model.discriminator(images).numel() == 3


@pytest.mark.parametrize("name", ["vae-conv", "vae-mlp", "gan-dcgan", "gan-mlp"])
def test_a_latent_size_below_one_is_refused_by_the_builder(name):
    with pytest.raises(ValueError, match="latent_dim must be at least 1, got 0"):
        architectures.create(name, (1, 28, 28), latent_dim=0)


@pytest.mark.slow
def test_fid_puts_the_training_split_far_closer_to_the_test_split_than_one_class_or_noise(
    trained_reference, shapes, fid_settings
):
    unseen = data.load("synthetic")  # the reference classifier trained on the first 1,000 training images only
    pool_x, pool_y = unseen.train_x[1000:], unseen.train_y[1000:]
    n = len(shapes.test_x)
    same = quality(trained_reference, shapes.test_x, pool_x[:n], fid_settings)
    one_class = quality(trained_reference, shapes.test_x, pool_x[pool_y == 3][:n], fid_settings)
    noise = quality(trained_reference, shapes.test_x, torch.rand(n, *shapes.input_shape), fid_settings)
    assert 0 < 10 * same["fid"] < one_class["fid"] < noise["fid"], (same, one_class, noise)
    assert same["kid"] < one_class["kid"] < noise["kid"]
    assert abs(same["kid"]) < 0.1 * one_class["kid"]  # KID is unbiased: about 0 for one distribution


@pytest.mark.slow
def test_the_reference_classifier_is_trained_once_cached_and_leaves_the_random_state_alone(
    trained_reference, shapes, fid_settings, monkeypatch
):
    assert trained_reference.accuracy > 0.3  # ten classes: it has learned them well beyond chance
    assert trained_reference.path.name.startswith("cnn-bn-synthetic-seed0-") and trained_reference.path.is_file()
    state = torch.get_rng_state()
    again = reference.load_or_train(fid_settings, shapes, CPU)
    assert torch.equal(torch.get_rng_state(), state)
    assert again.cached and again.accuracy == trained_reference.accuracy and again.path == trained_reference.path
    x = shapes.test_x[:8]
    assert torch.equal(again.features(x), trained_reference.features(x)) and again.features(x).shape == (8, 1000)
    changes = (fid_settings, dataclasses.replace(fid_settings, seed=1), dataclasses.replace(fid_settings, lr=0.002))
    keys = {reference.cache_path(changed, shapes) for changed in changes}
    keys.add(reference.cache_path(fid_settings, dataclasses.replace(shapes, train_x=shapes.train_x[:500])))
    assert len(keys) == 4
    monkeypatch.setenv(reference.CACHE_ENV, "/somewhere/else")
    assert str(reference.cache_dir(FidSettings())) == "/somewhere/else"


@pytest.mark.slow
def test_a_cached_reference_with_flipped_bytes_is_discarded_and_trained_again(trained_reference, shapes, fid_settings, tmp_path, capsys):
    settings = dataclasses.replace(fid_settings, cache_dir=str(tmp_path))
    path = reference.cache_path(settings, shapes)
    for source in (trained_reference.path, trained_reference.path.with_name(trained_reference.path.name + ".sha256")):
        shutil.copy(source, path.with_name(source.name))
    content = bytearray(path.read_bytes())
    content[len(content) // 2 : len(content) // 2 + 64] = bytes(64)  # loadable, same size, other weights
    path.write_bytes(bytes(content))

    rebuilt = reference.load_or_train(settings, shapes, CPU)
    err = capsys.readouterr().err
    assert f"FID reference cache {path}: its checksum does not match; discarded, training it again" in err
    assert not rebuilt.cached and rebuilt.accuracy == trained_reference.accuracy
    assert reference.load_or_train(settings, shapes, CPU).cached


def test_calibration_sets_score_as_sample_quality_scores_them_real_below_mean_image_below_noise(
    trained_reference, shapes, fid_settings
):
    n = len(shapes.test_x)
    images = calibration_images(shapes.train_x, n, seed=0)
    assert all(len(x) == n and x.shape[1:] == shapes.train_x.shape[1:] for x in images.values())
    assert torch.equal(images["real"], shapes.train_x[:n]) and torch.equal(images["mean_image"][0], images["mean_image"][-1])
    assert torch.equal(images["noise"], calibration_images(shapes.train_x, n, seed=0)["noise"])
    assert not torch.equal(images["noise"], calibration_images(shapes.train_x, n, seed=1)["noise"])
    fake = images["noise"].flip(0)
    features, subsets, size = trained_reference.features, fid_settings.kid_subsets, fid_settings.kid_subset_size
    found = sample_quality(features, shapes.test_x, fake, fid_settings.eval_batch_size, subsets, size, 0, images)
    assert {k: v for k, v in found.items() if not k.startswith("fid_calibration")} == pytest.approx(
        quality(trained_reference, shapes.test_x, fake, fid_settings)
    )
    for name, x in images.items():  # the real features, extracted once, serve every set
        alone = quality(trained_reference, shapes.test_x, x, fid_settings)["fid"]
        assert found[f"fid_calibration_{name}"] == pytest.approx(alone, rel=1e-3)
    calibrated = [found[f"fid_calibration_{name}"] for name in ("real", "mean_image", "noise")]
    assert 0 < calibrated[0] < calibrated[1] < calibrated[2], found


def test_a_generator_table_ends_with_the_calibration_rows_its_records_measured():
    common = {"seed": 0, "dataset": "synthetic", "status": "ok", "task": "gan"}
    calibration = {"fid_calibration_real": 20.0, "fid_calibration_mean_image": 1700.0, "fid_calibration_noise": 49000.0}
    records = [
        {**common, "architecture": "gan-dcgan", "fid": 500.0, **calibration},
        {**common, "architecture": "gan-mlp", "fid": 900.0, **calibration, "fid_calibration_noise": 51000.0},
    ]
    headers, body = report.table_cells(aggregate.aggregate(records))
    column = {name: headers.index(name) for name in ("architecture", "seeds", "status", "FID", "KID")}
    assert [row[column["architecture"]] for row in body] == [
        "gan-dcgan", "gan-mlp", "(real training images)", "(mean image repeated)", "(uniform noise)"
    ]
    assert [(row[column["FID"]], row[column["seeds"]], row[column["status"]]) for row in body[2:]] == [
        ("20.0", "2", "calibration"), ("1700", "2", "calibration"), ("50000", "2", "calibration")
    ]
    assert all(row[column["KID"]] == "" for row in body[2:])
    no_calibration = [{k: v for k, v in r.items() if not k.startswith("fid_calibration")} for r in records]
    assert len(report.table_cells(aggregate.aggregate(no_calibration))[1]) == 2


@pytest.mark.slow
def test_a_generators_fid_falls_as_it_trains(trained_reference, shapes, fid_settings, tmp_path):
    # Smoothed shapes: a target that a small VAE approaches in a few epochs (pixel noise is beyond a VAE's mean).
    def smooth(x):
        return F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)

    target = data.ImageData(
        name="smooth", train_x=smooth(shapes.train_x), train_y=shapes.train_y, test_x=smooth(shapes.test_x),
        test_y=shapes.test_y, num_classes=10,
    )
    settings = VaeSettings(epochs=1, batch_size=32, eval_batch_size=300)
    model = architectures.create("vae-mlp", shapes.input_shape, **settings.model_overrides())
    z = generative.codes(len(target.test_x), model.latent_dim, 0, CPU)

    def fid():
        samples = generative.generate(vae.sampler(model.eval()), z, settings.eval_batch_size)
        return quality(trained_reference, target.test_x, samples, fid_settings)["fid"]

    before = fid()
    vae.fit(model, target, settings, RunContext(device=CPU, seed=0, measure=FAST_MEASURE, run_dir=tmp_path), {})
    after = fid()
    assert after < 0.6 * before, (before, after)


@pytest.mark.slow
def test_a_vae_run_records_elbo_nll_fid_and_the_costs_of_its_decoder(trained_reference, shapes, fid_settings, tmp_path):
    settings = VaeSettings(epochs=1, batch_size=32, iwae_samples=10, eval_batch_size=300)
    model = architectures.create("vae-mlp", shapes.input_shape, **settings.model_overrides())
    record = {"architecture": "vae-mlp"}
    context = RunContext(device=CPU, seed=0, measure=WINDOWED_MEASURE, run_dir=tmp_path, fid=fid_settings)
    TASKS["vae"].run(model, shapes, settings, context, record)

    assert record["fid_classifier"] == "cnn-bn" and record["fid_classifier_accuracy"] == trained_reference.accuracy
    assert record["fid_classifier_cached"] and record["fid_samples"] == len(shapes.test_x) and record["kid"] > 0
    assert record["test_neg_elbo"] == pytest.approx(record["test_reconstruction"] + record["test_kl"])
    assert record["test_kl"] > 0 and record["test_nll"] < record["test_neg_elbo"]
    assert len(record["curve_test_neg_elbo"]) == 1 and record["curve_test_neg_elbo"][0] == record["test_neg_elbo"]
    assert record["generator_params"] + record["encoder_params"] == record["params"]
    assert record["flops_per_sample"] >= 2 * record["generator_params"] * 0.9  # every decoder weight is used
    assert record["generate_throughput"] > 0 and len(record["generate_throughput_repeats"]) == 5
    steps = record["steps_trained"]  # a window before training, then one after every step
    assert len(record["train_throughput_windows"]) == 1 + steps
    assert record["train_throughput"] > 0 and len(record["train_throughput_repeats"]) == 5 + steps
    assert record["peak_memory_mb"] > 0 and 0 < record["latency_p50_ms"] <= record["latency_p95_ms"]
    assert record["sample_grid"] == str(tmp_path / "vae-mlp-seed0-samples.png")
    with Image.open(record["sample_grid"]) as grid:  # 8 x 8 images of 16 px with torchvision's 2 px padding
        assert grid.format == "PNG" and grid.size == (2 + 8 * 18, 2 + 8 * 18)


@pytest.mark.slow
def test_a_gan_records_generator_and_discriminator_separately(trained_reference, shapes, fid_settings, tmp_path):
    settings = GanSettings(epochs=1, batch_size=100, latent_dim=32, eval_batch_size=300)
    torch.manual_seed(0)
    model = architectures.create("gan-mlp", shapes.input_shape, **settings.model_overrides())
    record = {"architecture": "gan-mlp"}
    context = RunContext(device=CPU, seed=0, measure=WINDOWED_MEASURE, run_dir=tmp_path, fid=fid_settings)
    TASKS["gan"].run(model, shapes, settings, context, record)
    assert record["generator_params"] == sum(p.numel() for p in model.generator.parameters())
    assert record["generator_params"] + record["discriminator_params"] == record["params"]
    assert record["latent_dim"] == 32 and len(record["curve_d_loss"]) == len(record["curve_g_loss"]) == 1
    assert record["d_loss"] > 0 and record["g_loss"] > 0 and record["fid"] > 0 and record["kid_std"] >= 0
    steps = record["steps_trained"]
    assert len(record["train_throughput_windows"]) == 1 + steps
    assert len(record["train_throughput_repeats"]) == 5 + steps
    assert (tmp_path / "gan-mlp-seed0-samples.png").is_file()
    # the windows' copies resume from both optimizers' states without moving them: training is the same without
    untimed = {"architecture": "gan-mlp"}
    torch.manual_seed(0)
    model = architectures.create("gan-mlp", shapes.input_shape, **settings.model_overrides())
    context = RunContext(device=CPU, seed=0, measure=FAST_MEASURE, run_dir=tmp_path, fid=fid_settings)
    TASKS["gan"].run(model, shapes, settings, context, untimed)
    assert (untimed["curve_d_loss"], untimed["curve_g_loss"]) == (record["curve_d_loss"], record["curve_g_loss"])


def test_a_vae_whose_loss_turns_nan_ends_training_as_diverged_at_that_step(shapes, tmp_path):
    class NanAfter3(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.calls = nn.Linear(4, 3 * 16 * 16), 0

        def forward(self, z):
            self.calls += self.training
            logits = self.linear(z).view(len(z), 3, 16, 16)
            return logits * float("nan") if self.training and self.calls > 3 else logits

    model = VAE(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8)), NanAfter3(), latent_dim=4)
    few = dataclasses.replace(shapes, train_x=shapes.train_x[:128], test_x=shapes.test_x[:32])
    with pytest.raises(Diverged, match="non-finite training loss at step 4 ") as error:
        context = RunContext(device=CPU, seed=0, measure=FAST_MEASURE, run_dir=tmp_path)
        vae.fit(model, few, VaeSettings(epochs=2, batch_size=32), context, {})
    assert error.value.step == 4


def test_collapse_step_finds_the_end_of_the_first_long_enough_run_of_low_losses():
    losses = torch.tensor([1.0, 0.001, 0.001, 1.0, 0.001, 0.001, 0.001, 1.0])
    assert gan.collapse_step(losses, 0.01, 3) == 7
    assert gan.collapse_step(losses, 0.01, 4) is None
    assert gan.collapse_step(losses[:2], 0.01, 3) is None


def test_a_discriminator_that_wins_outright_ends_training_as_diverged(shapes, tmp_path):
    @architectures.register("gan-frozen", task="gan", family="test")
    def build(input_shape, num_classes, latent_dim=8):
        class Black(nn.Module):
            def __init__(self):
                super().__init__()
                self.unused = nn.Parameter(torch.zeros(1))

            def forward(self, z):
                return torch.zeros(len(z), *input_shape) + 0 * self.unused

        pixels = input_shape[0] * input_shape[1] * input_shape[2]
        return GAN(Black(), nn.Sequential(nn.Flatten(), nn.Linear(pixels, 1)), latent_dim)

    settings = GanSettings(epochs=5, batch_size=32, lr=0.1, collapse_loss=0.2, collapse_steps=5)
    model = architectures.create("gan-frozen", shapes.input_shape)
    record = {}
    few = dataclasses.replace(shapes, train_x=shapes.train_x[:320])
    with pytest.raises(Diverged, match="discriminator collapsed: its loss stayed below 0.2 for 5 steps") as error:
        gan.fit(model, few, settings, RunContext(device=CPU, seed=0, measure=FAST_MEASURE, run_dir=tmp_path), record)
    assert 5 <= error.value.step < 50 and len(record["curve_d_loss"]) < settings.epochs  # 50 steps in all


def test_a_gan_with_ema_is_judged_by_the_moving_average_of_its_generator(shapes, tmp_path):
    few = dataclasses.replace(shapes, train_x=shapes.train_x[:128])
    context = RunContext(device=CPU, seed=0, measure=FAST_MEASURE, run_dir=tmp_path)
    settings = GanSettings(epochs=2, batch_size=32, latent_dim=8, ema=0.9)
    torch.manual_seed(0)
    model = architectures.create("gan-dcgan", shapes.input_shape, latent_dim=8)  # batch norm: buffers averaged too
    trained = []  # the generator as trained, after every step
    record_step = lambda clock, optimizers: trained.append({k: v.clone() for k, v in model.generator.state_dict().items()})
    gan.fit(model, few, settings, context, {}, record_step)
    torch.manual_seed(0)
    plain = architectures.create("gan-dcgan", shapes.input_shape, latent_dim=8)
    gan.fit(plain, few, dataclasses.replace(settings, ema=0.0), context, {})
    # weights and float buffers (batch norm's running statistics): the first update copies, each later one
    # moves 10% of the way
    average = {k: v for k, v in trained[0].items() if v.is_floating_point()}
    for state in trained[1:]:
        average = {k: v.lerp(state[k], 0.1) for k, v in average.items()}
    judged = model.generator.state_dict()
    assert len(trained) == 8 and "2.running_mean" in average
    assert all(torch.allclose(judged[k], v, atol=1e-6) for k, v in average.items())
    assert not torch.equal(judged["1.weight"], plain.generator.state_dict()["1.weight"])
    for ours, theirs in zip(model.discriminator.parameters(), plain.discriminator.parameters()):
        assert torch.equal(ours, theirs), "the average must not change how the pair trains"


def test_generators_share_one_table_beside_the_classifiers():
    common = {"seed": 0, "dataset": "synthetic", "status": "ok"}
    records = [
        {**common, "architecture": "cnn-bn", "task": "classify", "test_accuracy": 0.5},
        {**common, "architecture": "vae-conv", "task": "vae", "fid": 123.4, "kid": 0.05, "test_nll": 700.0},
        {**common, "architecture": "gan-dcgan", "task": "gan", "fid": 98.7, "kid": 0.04, "discriminator_params": 2e5},
        {**common, "architecture": "gan-mlp", "task": "gan", "status": "diverged", "error": "NaN loss at step 4"},
    ]
    text = report.tables(records)
    classify, generators = text.split("### Generators on synthetic")
    assert "### Classifiers on synthetic" in classify and "cnn-bn" in classify and "vae-conv" not in classify
    assert "| FID" in generators and "| KID" in generators and "params D (M)" in generators
    rows = [line for line in generators.splitlines() if line.startswith("|") and (" vae-conv " in line or " gan-" in line)]
    assert len(rows) == 3 and "123" in rows[0] and "98.7" in rows[1] and "0.20" in rows[1]
    assert [row.split("|")[2].strip() for row in rows] == ["vae", "gan", "gan"]
    assert "diverged: NaN loss at step 4" in rows[2]


GENERATIVE_SUITE = """
[vae]
epochs = 1
batch_size = 16
latent_dim = 4
iwae_samples = 5

[gan]
epochs = 1
batch_size = 16
latent_dim = 8

[fid]
epochs = 1
batch_size = 32
kid_subsets = 5
"""


@pytest.mark.slow
def test_a_suite_runs_vaes_and_gans_and_prints_them_in_one_generators_table(tiny_suite, tmp_path, capsys):
    (tmp_path / "nan_gan.py").write_text(NAN_GAN)
    suite = tiny_suite("vae-mlp", "gan-nan", "gan-mlp", extra=GENERATIVE_SUITE)
    argv = ["run", "--suite", suite, "--out", tmp_path / "runs", "--quiet", "--isolation", "none", "--arch-module",
            tmp_path / "nan_gan.py"]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    (path,) = (tmp_path / "runs").glob("*/records.jsonl")
    vae_record, nan_record, gan_record = [json.loads(line) for line in path.read_text().splitlines()]
    assert nan_record["status"] == "diverged" and nan_record["diverged_step"] == 4
    assert "non-finite GAN loss at step 4" in nan_record["error"]
    for record, latent in ((vae_record, 4), (gan_record, 8)):
        assert record["status"] == "ok", record.get("error")
        assert record["latent_dim"] == latent and record["fid"] > 0 and record["fid_classifier"] == "cnn-bn"
        assert (path.parent / f"{record['architecture']}-seed0-samples.png").is_file()
        assert record["fid_calibration_real"] < record["fid"] < record["fid_calibration_noise"], record
    generators = out.split("### Generators on synthetic")[1]
    assert "| FID" in generators and "| KID" in generators
    assert " vae-mlp " in generators and " gan-mlp " in generators and "diverged: non-finite GAN loss" in generators
    labels = [line.split("|")[1].strip() for line in generators.splitlines() if line.startswith("| (")]
    assert labels == ["(real training images)", "(mean image repeated)", "(uniform noise)"]
    assert main(["report", str(path.parent)]) == 0 and "### Generators on synthetic" in capsys.readouterr().out


BAD_SETTINGS = [
    ("[vae]\nlatent_dim = 0\n", r"\[vae\]: latent_dim must be at least 1, got 0"),
    ("[gan]\nlatent_dim = -3\n", r"\[gan\]: latent_dim must be at least 1, got -3"),
    ('[vae]\nlikelihood = "poisson"\n', r"\[vae\]: unknown likelihood 'poisson' \(valid: bernoulli, gaussian\)"),
    ("[vae]\niwae_samples = 0\n", r"\[vae\]: iwae_samples must be at least 1, got 0"),
    ('[fid]\nclassifier = "vae-conv"\n', r"\[fid\]: unknown classifier 'vae-conv' \(valid: cnn-baseline, cnn-bn"),
    ("[fid]\nkid_subset_size = 1\n", r"\[fid\]: kid_subset_size must be at least 2, got 1"),
]


@pytest.mark.parametrize("text, message", BAD_SETTINGS, ids=[t.replace("\n", " ").strip() for t, _ in BAD_SETTINGS])
def test_bad_generative_settings_give_one_line_and_exit_2(text, message, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code = main(["run", "--suite", str(path), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(message, err), err
