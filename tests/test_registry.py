import sys

import pytest
import torch
from torch import nn

import architectures
from architectures import registry

CLASSIFIERS = ["cnn-baseline", "cnn-bn", "cnn-deep", "cnn-wide", "googlenet", "resnet18", "vgg11-bn"]


def test_builtin_classifiers_are_listed():
    assert architectures.list_architectures(task="classify") == CLASSIFIERS


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_classifier_builds_and_runs_for_both_input_shapes(name, shape):
    model = architectures.create(name, shape, num_classes=10).eval()
    assert isinstance(model, nn.Module)
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("shape, flat", [((1, 28, 28), 128 * 3 * 3), ((3, 32, 32), 128 * 4 * 4)])
def test_cnn_baseline_is_the_reference_network_with_derived_flattened_size(shape, flat):
    model = architectures.create("cnn-baseline", shape, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(shape[0], 32), (32, 64), (64, 128)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 2 for p in pools)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(flat, 1000), (1000, 10)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_variants_differ_from_the_baseline_as_described():
    shape = (3, 32, 32)

    def convs(name):
        return [m.out_channels for m in architectures.create(name, shape).modules() if isinstance(m, nn.Conv2d)]

    assert convs("cnn-deep") == [32, 32, 64, 64, 128, 128]
    assert convs("cnn-wide") == [64, 128, 256]
    bn = architectures.create("cnn-bn", shape)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 3


def test_resnet18_has_a_small_image_stem():
    model = architectures.create("resnet18", (1, 28, 28))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.Identity)


def test_vgg11_bn_is_configuration_a_with_batch_norm_and_a_linear_head_for_the_input_size():
    for shape, pools in [((3, 32, 32), 5), ((1, 28, 28), 4)]:
        model = architectures.create("vgg11-bn", shape)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512] and convs[0].in_channels == shape[0]
        assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
        assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == pools
        assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 512


def test_googlenet_has_a_small_image_stem_and_no_auxiliary_heads():
    model = architectures.create("googlenet", (1, 28, 28))
    assert model.conv1.conv.kernel_size == (3, 3) and model.conv1.conv.stride == (1, 1) and model.conv1.conv.in_channels == 1
    assert isinstance(model.maxpool2, nn.Identity) and not model.aux_logits and model.aux1 is None
    model.train()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # a tensor, not GoogLeNetOutputs, in training too


def test_overrides_reach_the_builder():
    model = architectures.create("cnn-baseline", (3, 32, 32), num_classes=7, dropout=0.1, hidden=64)
    assert model.classifier[-1].out_features == 7 and model.classifier[-2].p == 0.1


def test_wildcards_select_like_timm():
    assert architectures.list_architectures("cnn-*") == ["cnn-baseline", "cnn-bn", "cnn-deep", "cnn-wide"]
    assert architectures.resolve(["resnet*", "cnn-b*"]) == ["resnet18", "cnn-baseline", "cnn-bn"]


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(architectures.UnknownArchitecture, match="valid: .*cnn-baseline.*resnet18"):
        architectures.resolve(["nope-*"])
    with pytest.raises(architectures.UnknownArchitecture, match="'nope'"):
        architectures.create("nope", (3, 32, 32))


def test_registering_a_name_twice_names_both_places():
    with pytest.raises(ValueError, match=r"'cnn-baseline' registered twice: .*cnn\.py:\d+ and .*test_registry\.py:\d+"):

        @architectures.register("cnn-baseline", task="classify", family="cnn")
        def again(input_shape, num_classes):
            return nn.Linear(1, 1)


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    (tmp_path / "my_plugin_nets.py").write_text(
        "from torch import nn\n"
        "import architectures\n"
        "@architectures.register('plugin-mlp', task='classify', family='mlp', description='from a plugin')\n"
        "def build(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n"
    )
    dist = tmp_path / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[archbench.architectures]\nnets = my_plugin_nets\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    assert "plugin-mlp" in architectures.list_architectures()
    assert architectures.get_spec("plugin-mlp").description == "from a plugin"
    sys.modules.pop("my_plugin_nets", None)


def test_a_broken_plugin_is_reported_by_name(tmp_path, monkeypatch):
    dist = tmp_path / "broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[archbench.architectures]\nbad = no_such_module_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    with pytest.raises(architectures.PluginError, match="bad = no_such_module_here"):
        architectures.list_architectures()


@pytest.mark.parametrize("stem", ["bench", "torchvision", "architectures"])
def test_a_plugin_file_named_like_an_imported_module_replaces_nothing(stem, tmp_path):
    (tmp_path / f"{stem}.py").write_text(
        "from torch import nn\nimport architectures\n"
        f"@architectures.register('from-{stem}-py', task='classify', family='test')\n"
        "def build(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))\n"
    )
    __import__(stem)
    before = sys.modules[stem]
    architectures.load_module(str(tmp_path / f"{stem}.py"))
    assert sys.modules[stem] is before
    assert architectures.create(f"from-{stem}-py", (1, 8, 8), 3)(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
