"""What `archbench ab` measures in each side's checkout: a probe times every task's costs and trains nothing."""

import pytest
import torch

import architectures
from bench import configs, probe
from bench.run import runner
from bench.tasks import TASKS, figures

from support.settings import FAST_MEASURE

CPU = torch.device("cpu")
QUALITY = {figure.key for figure in figures() if figure.kind == "quality"}
TRAINING = {"steps_trained", "epochs_trained", "train_loss", "test_neg_elbo", "kid", "d_loss", "g_loss", "test_loss"}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_probe_of_every_task_trains_nothing_and_records_no_quality(task, tmp_path, monkeypatch):
    name = architectures.list_architectures(task=task)[0]
    loop = TASKS[task].loop()

    def no_training(*args, **kwargs):
        raise AssertionError(f"the probe of {name} trained it")

    monkeypatch.setattr(loop, "fit", no_training)
    config = configs.load("quick", architectures=[name], limit_train=128, limit_test=64, out=tmp_path, measure=FAST_MEASURE)
    mode = configs.modes(config)[0].resolved(CPU)
    result = probe.probe(name, config, runner.load_data(config), CPU, mode, 0, tmp_path)
    assert result["status"] == "ok", result["error"]
    assert not (QUALITY | TRAINING) & result.keys()
    assert not [key for key in result if key.startswith("curve_")]
    assert result["train_throughput"] > 0 and result["params"] > 0
