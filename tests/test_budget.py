"""Equal-budget training: a fit stops at the first step boundary at or past a time or FLOPs budget."""

import dataclasses

import pytest
import torch

import architectures
from bench import data
from bench.results import schema
from bench.cli import main
from bench.measure.modes import Mode
from bench.tasks import TASKS
from bench.tasks.base import RunContext
from bench.tasks.loop import Budget, run_epoch
from bench.tasks.settings import ClassifySettings, TrainingSettings
from support.settings import FAST_MEASURE

CPU = torch.device("cpu")


class FakeClock:
    """A training clock that advances `per_step` seconds with every step taken."""

    def __init__(self, per_step):
        self.per_step, self.budget = per_step, None

    def now(self):
        return self.budget.taken * self.per_step


def steps_run(budget, epochs=10, steps_per_epoch=4):
    taken = []
    for epoch in budget.epochs():
        losses = run_epoch(lambda x, y: torch.zeros(()), [(None, None)] * steps_per_epoch, steps_per_epoch, budget=budget)
        taken.append(len(losses))
        assert epoch < epochs
    return taken


def test_a_time_budget_stops_at_the_first_step_boundary_past_it_mid_epoch():
    clock = FakeClock(per_step=0.1)
    budget = Budget(TrainingSettings(budget_s=0.55), clock)
    clock.budget = budget
    assert steps_run(budget) == [4, 2]  # steps start at 0.0 ... 0.5 s: the 6th ends at 0.6 s, past 0.55
    assert budget.figures(4) == {"budget_s": 0.55, "budget_flops": None, "train_flops_per_step": None,
                                 "steps_trained": 6, "epochs_trained": 1.5}


def test_a_flops_budget_buys_whole_steps_and_without_a_budget_the_epochs_decide():
    budget = Budget(TrainingSettings(budget_flops=2500.0), clock=None, flops_per_step=1000.0)
    assert steps_run(budget) == [3] and budget.planned_steps(4) == 3  # 3 steps: 3000 FLOPs, the first past 2500
    assert steps_run(Budget(TrainingSettings(epochs=2), clock=None)) == [4, 4]


def test_a_classifier_trained_to_a_flops_budget_records_what_it_bought(tmp_path):
    tiny = data.load("synthetic", limit_train=128, limit_test=64)  # 4 steps of 32 per epoch
    model = architectures.create("cnn-baseline", tiny.input_shape, tiny.num_classes)
    probe = ClassifySettings(batch_size=32, optimizer="adam", budget_flops=1.0)
    costs = {}
    context = RunContext(device=CPU, seed=0, measure=FAST_MEASURE, run_dir=tmp_path)
    TASKS["classify"].run(model, tiny, probe, context, costs, train=False)
    per_step = costs["train_flops_per_step"]
    assert per_step == pytest.approx(3 * 32 * costs["flops_per_sample"], rel=0.05)  # forward and backward: about 3x

    settings = dataclasses.replace(probe, budget_flops=5.5 * per_step)
    found = {}
    context = RunContext(device=CPU, seed=0, measure=FAST_MEASURE, run_dir=tmp_path)
    TASKS["classify"].run(model, tiny, settings, context, found)
    assert found["steps_trained"] == 6 and found["epochs_trained"] == 1.5
    assert len(found["curve_test_accuracy"]) == 2  # evaluated after the full epoch and after the partial one
    assert (found["steps_trained"] - 1) * per_step < found["budget_flops"] <= found["steps_trained"] * per_step


def test_budgets_are_checked_and_enter_the_config_id_only_when_set(tiny_suite, capsys):
    for extra, message in [
        ("budget_s = -1\n", "budget_s must be positive"),
        ("budget_s = 5\nbudget_flops = 1e9\n", "give budget_s or budget_flops, not both"),
        ('budget_s = 5\nschedule = "cosine"\n', "a cosine schedule needs the number of steps in advance"),
    ]:
        suite = tiny_suite("cnn-baseline")
        suite.write_text(suite.read_text().replace("[classify]\n", "[classify]\n" + extra))
        assert main(["run", "--suite", str(suite), "--isolation", "none"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    tiny = data.load("synthetic", limit_train=32, limit_test=32)

    def config_id(settings):
        return schema.start(architectures.get_spec("cnn-baseline"), 0, schema.Origin(run_id="r", suite="s"), data=tiny,
                            device=CPU, settings=settings, measure=FAST_MEASURE, mode=Mode())["config_id"]

    plain = ClassifySettings()
    assert config_id(plain) != config_id(dataclasses.replace(plain, budget_s=5.0))
    fields = [f.name for f in dataclasses.fields(plain) if f.name not in schema.UNSET_OMITTED]
    before = schema.start(architectures.get_spec("cnn-baseline"), 0, schema.Origin(run_id="r", suite="s"), data=tiny,
                          device=CPU, settings=plain, measure=FAST_MEASURE, mode=Mode())
    assert before["config_id"] == schema.config_id(before, fields)  # what it was before budgets existed
