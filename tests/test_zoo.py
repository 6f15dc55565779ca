"""The zoos by name: torchvision and timm models built untrained for the data's shape, listed with wildcards,
run like registered architectures, and their parameters and FLOPs checked against torchvision's own figures."""

import contextlib
import sys
from unittest import mock

import pytest
import torch
from torch import nn

import architectures
from architectures import registry
from bench.measure import counts
from support.cli import run_cli, run_records

timm = pytest.importorskip("timm")  # the `timm` extra; the dev extra installs it


@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet18", "torchvision:vit_b_16", "timm:vit_tiny_patch16_224"])
@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 224, 224)])
def test_a_zoo_model_is_built_untrained_for_the_datas_classes_and_input_shape(name, shape):
    torch.manual_seed(0)
    model = architectures.create(name, shape, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, *shape)).shape == (1, 7)
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == shape[0]
    spec = architectures.get_spec(name)
    assert (spec.task, spec.family) == ("classify", name.partition(":")[0])
    assert "untrained" in spec.description and spec.source_hash


def test_torchvision_models_are_torchvision_modules_and_timm_models_timm_modules():
    import torchvision

    assert type(architectures.create("torchvision:resnet50", (3, 32, 32))) is torchvision.models.ResNet
    assert type(architectures.create("timm:resnet18", (3, 32, 32))) is timm.models.ResNet
    assert "torchvision/models/resnet.py" in architectures.get_spec("torchvision:resnet50").source


def test_zoos_are_listed_with_wildcards_and_only_when_asked_for(capsys):
    code, out, _ = run_cli(capsys, "list", "torchvision:resnet*")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        "torchvision:resnet101", "torchvision:resnet152", "torchvision:resnet18", "torchvision:resnet34",
        "torchvision:resnet50",
    ]
    code, out, _ = run_cli(capsys, "list", "timm:convnext_at*")
    assert code == 0 and "timm:convnext_atto " in out and all(line.startswith("timm:convnext_at") for line in out.splitlines())
    assert not any(":" in name for name in architectures.list_architectures("*"))
    assert architectures.list_architectures("torchvision:*", task="vae") == []
    assert len(architectures.list_architectures("torchvision:*")) >= 80


def test_an_unknown_zoo_model_is_one_line_with_the_closest_names(capsys):
    code, _, err = run_cli(capsys, "list", "torchvision:resnet5")
    assert code == 2 and err.count("\n") == 1
    assert "torchvision has no such model" in err and "did you mean torchvision:resnet50" in err
    code, _, err = run_cli(capsys, "run", "--arch", "timm:nonexistent_net_*", "--quiet")
    assert code == 2 and err == "archbench: error: no timm model matches 'timm:nonexistent_net_*' (list them: archbench list 'timm:*')\n"


def test_timm_models_without_timm_name_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what `import timm` finds where it is not installed
    registry._zoo_spec.cache_clear()
    code, _, err = run_cli(capsys, "run", "--arch", "timm:resnet18", "--quiet")
    assert code == 2
    assert err == "archbench: error: timm models need timm, an optional extra: pip install -e '.[timm]' (or pip install timm)\n"
    code, _, err = run_cli(capsys, "list", "timm:*")
    assert code == 2 and "pip install -e '.[timm]'" in err


def test_a_zoo_model_that_cannot_take_the_input_fails_in_one_line_and_the_suite_goes_on(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("torchvision:inception_v3", "timm:resnet18", "torchvision:maxvit_t")
    runs = tmp_path / "runs"  # not tmp_path itself, which holds the suite file too
    code, out, err = run_cli(capsys, "run", "--suite", suite, "--out", runs, "--quiet", "--isolation", "none", "--epochs", "1")
    assert code == 0, err
    inception, resnet, maxvit = run_records(runs)
    assert resnet["status"] == "ok" and resnet["architecture"] == "timm:resnet18"
    assert resnet["params"] == sum(p.numel() for p in architectures.create("timm:resnet18", (3, 16, 16)).parameters())
    assert inception["status"] == maxvit["status"] == "failed"
    assert inception["error"].startswith("ValueError: the model failed on a batch of 2 inputs of 3x16x16: RuntimeError: ")
    assert maxvit["error"].startswith("ValueError: torchvision:maxvit_t cannot be built for 3x16x16 inputs: ValueError: ")
    assert "\n" not in inception["error"] + maxvit["error"]
    code, out, err = run_cli(capsys, "report", next(runs.iterdir()))
    assert code == 0 and "timm:resnet18" in out


@contextlib.contextmanager
def _uninitialized_and_without_batch_norm():
    """Models built without initializing their weights (counting needs shapes only; the largest have 600M
    parameters) and batch norm skipped (it changes no shape and the FLOP counter counts none of it: on meta tensors
    it is the slowest operation to trace)."""
    with contextlib.ExitStack() as stack:
        for name in dir(nn.init):
            if name.endswith("_") and not name.startswith("_"):
                stack.enter_context(mock.patch.object(nn.init, name, lambda tensor, *args, **kwargs: tensor))
        stack.enter_context(mock.patch.object(nn.functional, "batch_norm", lambda x, *args, **kwargs: x))
        yield


def _published_figures():
    """(model, weights, input size, classes, params, GFLOPS) for every torchvision classification model's weights
    that publish their parameter and operation counts, one per distinct (model, size, params)."""
    import torchvision

    seen = {}
    for model in torchvision.models.list_models(module=torchvision.models):
        for weights in torchvision.models.get_model_weights(model):
            meta = weights.meta
            if "num_params" in meta and "_ops" in meta and meta.get("categories"):
                size = weights.transforms().crop_size[0]
                seen.setdefault((model, size, meta["num_params"]), (model, str(weights), size, len(meta["categories"]), meta["num_params"], meta["_ops"]))
    return list(seen.values())


def test_params_and_flops_of_every_torchvision_model_match_its_published_metadata():
    """archbench's counts against torchvision's weights metadata, which is read without downloading anything:
    parameters exactly, operations within 2% (torchvision's GFLOPS count a multiply-add once, archbench twice)."""
    published = _published_figures()
    assert len({model for model, *_ in published}) >= 70
    disagree = []
    for model, weights, size, classes, params, gflops in published:
        overrides = {"aux_logits": True} if model == "inception_v3" else {}  # its weights keep the auxiliary head
        with _uninitialized_and_without_batch_norm():
            built = architectures.create(f"torchvision:{model}", (3, size, size), classes, **overrides).eval().to("meta")
            with torch.no_grad():
                flops = counts.flops(lambda: built(torch.empty(1, 3, size, size, device="meta")))
        ours = counts.parameter_counts(built)[0]
        if ours != params or abs(flops / 2e9 / gflops - 1) > 0.02:
            disagree.append(f"{weights}: params {ours} vs {params}, GFLOPS {flops / 2e9:.4g} vs {gflops}")
    assert disagree == []


def test_attention_is_counted_as_a_run_counts_it_on_the_device():
    """A run counts FLOPs on the real model under inference_mode, where nn.MultiheadAttention takes a fused path
    the FLOP counter does not see into; counted as its matrix products, ViT-B/16 is what torchvision publishes."""
    import torchvision

    model = architectures.create("torchvision:vit_b_16", (3, 224, 224), 1000).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        counted = counts.flops(lambda: model(x))
        assert torch.backends.mha.get_fastpath_enabled()  # switched off only while counting
    published = torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1.meta["_ops"]
    assert counted / 2e9 == pytest.approx(published, rel=0.01)
