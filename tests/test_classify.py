import math

import pytest
import torch
from torch import nn

import architectures
from bench import data
from bench.results import schema
from bench.tasks import TASKS, classify
from bench.tasks import loop
from bench.measure.modes import Amp, Mode
from bench.tasks.base import Diverged, RunContext
from bench.tasks.settings import ClassifySettings
from support.settings import FAST_MEASURE, WINDOWED_MEASURE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny():
    return data.load("synthetic", limit_train=128, limit_test=64)


def run(name, tiny, tmp_path, seed=0, measure=FAST_MEASURE, **settings):
    settings = ClassifySettings(**{"epochs": 2, "batch_size": 32, "optimizer": "adam", "lr": 1e-3, **settings})
    torch.manual_seed(seed)
    model = architectures.create(name, tiny.input_shape, tiny.num_classes)
    record = {}
    context = RunContext(device=CPU, seed=seed, measure=measure, run_dir=tmp_path)
    TASKS["classify"].run(model, tiny, settings, context, record)
    return record


def test_a_run_records_quality_curves_and_costs(tiny, tmp_path):
    record = run("cnn-bn", tiny, tmp_path, measure=WINDOWED_MEASURE, target_accuracy=0.01)
    assert 0 <= record["test_accuracy"] <= 1 and record["test_loss"] > 0
    assert record["generalization_gap"] == pytest.approx(record["train_accuracy"] - record["test_accuracy"])
    assert len(record["curve_test_accuracy"]) == len(record["curve_train_accuracy"]) == 2
    assert record["curve_train_time_s"][-1] == pytest.approx(record["train_time_s"])
    assert record["epochs_to_target"] == 1 and 0 < record["time_to_target_s"] <= record["train_time_s"]
    assert record["params"] == sum(p.numel() for p in architectures.create("cnn-bn", tiny.input_shape).parameters())
    assert record["flops_per_sample"] > 2 * record["params"] * 0.9  # every weight is used at least once per sample
    assert record["infer_throughput"] > 0 and len(record["infer_throughput_repeats"]) == 5
    steps = record["steps_trained"]  # 2 epochs of 4 steps; a window before training, then one after every step
    assert steps == 8 and record["train_throughput_window_steps"] == list(range(steps + 1))
    assert record["train_throughput"] > 0 and len(record["train_throughput_repeats"]) == 5 + steps
    assert len(record["train_throughput_windows"]) == 1 + steps
    assert 0 < record["latency_p50_ms"] <= record["latency_p95_ms"]
    assert record["peak_memory_mb"] > 0 and record["peak_memory_method"]


def test_a_one_epoch_run_records_where_its_loop_figure_starts(tiny, tmp_path):
    record = run("cnn-baseline", tiny, tmp_path, measure=WINDOWED_MEASURE, epochs=1)
    steps = record["steps_trained"]
    assert record["loop_start_samples"] == steps // 2 * 32  # the middle step's, at batch 32
    assert 0 < record["loop_start_s"] < record["train_time_s"]
    record["train_samples"] = len(tiny.train_x)  # the runner's, beside the task's figures
    second_half = (record["train_samples"] - record["loop_start_samples"]) / (record["train_time_s"] - record["loop_start_s"])
    assert schema.loop_throughput(record) == pytest.approx(second_half)


def test_same_seed_gives_identical_metrics_on_cpu(tiny, tmp_path):
    first, second = run("cnn-baseline", tiny, tmp_path), run("cnn-baseline", tiny, tmp_path)
    keys = ("test_accuracy", "test_loss", "train_accuracy", "curve_train_loss", "curve_test_loss")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}
    other = run("cnn-baseline", tiny, tmp_path, seed=1)
    assert other["curve_train_loss"] != first["curve_train_loss"]


def test_windows_during_training_time_the_model_as_training_left_it(tiny, tmp_path, monkeypatch):
    copied, real_trainee = [], loop.trainee

    def trainee(model, mode, parts):
        copied.append(next(model.parameters()).detach().clone())
        return real_trainee(model, mode, parts)

    monkeypatch.setattr(loop, "trainee", trainee)
    run("cnn-baseline", tiny, tmp_path, measure=WINDOWED_MEASURE)
    # two copies before training (throughput, then memory), then one after each of the 8 steps
    assert len(copied) == 10 and torch.equal(copied[0], copied[1])
    assert all(not torch.equal(before, after) for before, after in zip(copied[1:], copied[2:]))


def test_windows_during_training_do_not_change_what_it_learns(tiny, tmp_path):
    timed, untimed = run("cnn-bn", tiny, tmp_path, measure=WINDOWED_MEASURE), run("cnn-bn", tiny, tmp_path)
    assert len(untimed["train_throughput_windows"]) == 1 and len(timed["train_throughput_windows"]) == 9
    keys = ("curve_train_loss", "curve_test_loss", "test_accuracy")
    assert {k: timed[k] for k in keys} == {k: untimed[k] for k in keys}


def test_training_lowers_the_loss(tiny, tmp_path):
    record = run("cnn-bn", tiny, tmp_path, epochs=4)
    assert record["curve_train_loss"][-1] < record["curve_train_loss"][0]


def test_target_not_reached_is_recorded_as_missing(tiny, tmp_path):
    record = run("cnn-baseline", tiny, tmp_path, epochs=1, target_accuracy=1.0)
    assert record["epochs_to_target"] is None and record["time_to_target_s"] is None


def test_a_nan_loss_raises_diverged_with_its_step(tiny, tmp_path):
    @architectures.register("nan-after-3", task="classify", family="test")
    def build(input_shape, num_classes):
        class NanAfter(nn.Module):
            def __init__(self):
                super().__init__()
                self.linear, self.calls = nn.Linear(math.prod(input_shape), num_classes), 0

            def forward(self, x):
                self.calls += self.training
                out = self.linear(x.flatten(1))
                return out * float("nan") if self.training and self.calls > 3 else out

        return NanAfter()

    with pytest.raises(Diverged, match="step 4 ") as error:
        settings = ClassifySettings(epochs=2, batch_size=32)
        model = architectures.create("nan-after-3", tiny.input_shape, 10)
        context = RunContext(device=CPU, seed=0, measure=FAST_MEASURE, run_dir=tmp_path)
        classify.fit(model, tiny.splits(), settings, context, {})
    assert error.value.step == 4


def test_settings_reject_impossible_values():
    assert ClassifySettings(epochs=0).problems() == ["epochs must be at least 1, got 0"]
    assert "unknown optimizer 'lion'" in ClassifySettings(optimizer="lion").problems()[0]
    assert "target_accuracy" in ClassifySettings(target_accuracy=1.5).problems()[0]


def test_the_timed_training_step_runs_on_the_batches_training_draws(monkeypatch, tmp_path):
    shapes = data.load("synthetic", limit_train=100, limit_test=20)
    seen = []
    real_step = classify.train_step
    monkeypatch.setattr(classify, "train_step", lambda model, opt, x, y, amp: seen.append(y.clone()) or real_step(model, opt, x, y, amp))
    settings = ClassifySettings(batch_size=25)
    model = architectures.create("cnn-baseline", shapes.input_shape, shapes.num_classes)
    costs = {}
    context = RunContext(device=CPU, seed=7, measure=FAST_MEASURE, run_dir=tmp_path)
    TASKS["classify"].run(model, shapes, settings, context, costs, train=False)
    assert costs["train_throughput"] > 0
    drawn = data.training_batches(shapes.standardized.train_x, shapes.train_y, 25, seed=7)
    first = [next(drawn)[1] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(seen, first)) and not torch.equal(seen[0], seen[1])


def test_a_resumed_optimizer_starts_from_a_copy_of_trainings_state():
    torch.manual_seed(0)
    model, x, y = nn.Linear(4, 3), torch.randn(8, 4), torch.randint(0, 3, (8,))
    settings = ClassifySettings(optimizer="adam", lr=1e-2)
    trained = classify.make_optimizer(model.parameters(), settings)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(trained, T_max=10)
    for _ in range(3):
        classify.train_step(model, trained, x, y, Amp(Mode(), CPU))
        schedule.step()
    before = {k: v.clone() for k, v in trained.state[model.weight].items()}
    copied = loop.trainee(model, Mode(), classify.compiled_parts)
    resumed = classify.make_optimizer(copied.parameters(), settings)
    loop.resume_optimizers([resumed], [trained])
    state = resumed.state[copied.weight]
    assert all(torch.equal(state[k], before[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert resumed.param_groups[0]["lr"] == trained.param_groups[0]["lr"] < 1e-2  # the schedule's rate
    classify.train_step(copied, resumed, x, y, Amp(Mode(), CPU))
    assert not torch.equal(state["exp_avg"], before["exp_avg"])
    assert all(torch.equal(trained.state[model.weight][k], before[k]) for k in before)  # training's own untouched
