"""Zoo names that would start more than the user meant: a zoo prefix with no name is a one-line mistake, not the
whole zoo, and a pattern matching more than MANY_ZOO_MODELS zoo models runs only with --yes."""

import pytest

import architectures
from architectures import registry
from bench.run import speed, suite
from support.cli import run_cli


class Stopped(Exception):
    """Raised where a command would start running its architectures."""


def stop_before_running(monkeypatch) -> list:
    """Make `run` and `speed` stop where they would start; the configurations they got are appended to the list."""
    configs = []

    def stop(config, *args, **kwargs):
        configs.append(config)
        raise Stopped

    monkeypatch.setattr(suite, "run_suite", stop)
    monkeypatch.setattr(speed, "run_sweep", stop)
    return configs


@pytest.mark.parametrize("name", ["torchvision:", "timm:", "torchvision:  "])
@pytest.mark.parametrize("command", ["list", "run", "speed"])
def test_a_zoo_prefix_with_no_name_is_one_line_pointing_at_the_star_form(command, name, tmp_path, capsys, monkeypatch):
    stop_before_running(monkeypatch)
    zoo = name.partition(":")[0]
    argv = [command, name] if command == "list" else [command, "--arch", name, "--out", tmp_path / "runs", "--yes"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err == (f"archbench: error: {name!r} names no {zoo} model: give a name or a pattern "
                   f"(list them: archbench list '{zoo}:*')\n")
    assert not (tmp_path / "runs").exists()


def test_the_registry_resolves_no_zoo_prefix_alone():
    for call in (lambda: architectures.resolve(["torchvision:"]), lambda: architectures.get_spec("timm: "),
                 lambda: architectures.many_zoo_models(["cnn-*", "torchvision:"])):
        with pytest.raises(architectures.UnknownArchitecture, match="names no .* model: give a name or a pattern"):
            call()


def test_many_zoo_models_names_the_patterns_over_the_limit_with_their_counts(monkeypatch):
    everything = len(architectures.list_architectures("torchvision:*"))
    assert everything > architectures.MANY_ZOO_MODELS
    patterns = ["cnn-*", "torchvision:*", "torchvision:resnet*", "torchvision:resnet18"]
    assert architectures.many_zoo_models(patterns) == [("torchvision:*", everything)]
    resnets = len(architectures.list_architectures("torchvision:resnet*"))
    monkeypatch.setattr(registry, "MANY_ZOO_MODELS", resnets)
    assert architectures.many_zoo_models(["torchvision:resnet*"]) == []
    monkeypatch.setattr(registry, "MANY_ZOO_MODELS", resnets - 1)
    assert architectures.many_zoo_models(["torchvision:resnet*"]) == [("torchvision:resnet*", resnets)]


@pytest.mark.parametrize("command", ["run", "speed"])
def test_a_pattern_of_many_zoo_models_runs_only_with_yes(command, tmp_path, capsys, monkeypatch):
    started = stop_before_running(monkeypatch)
    count = len(architectures.list_architectures("torchvision:*"))
    argv = [command, "--arch", "cnn-baseline", "torchvision:*", "--out", tmp_path / "runs", "--quiet"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and started == []
    assert err == (f"archbench: error: 'torchvision:*' matches {count} torchvision models (more than "
                   f"{architectures.MANY_ZOO_MODELS}): pass --yes to run them all, or name fewer "
                   "(list them: archbench list 'torchvision:*')\n")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(Stopped):
        run_cli(capsys, *argv, "--yes")
    (config,) = started
    assert len(architectures.resolve(config.architectures)) == count + 1


def test_timm_everything_is_counted_too(tmp_path, capsys, monkeypatch):
    pytest.importorskip("timm")
    started = stop_before_running(monkeypatch)
    count = len(architectures.list_architectures("timm:*"))
    code, _, err = run_cli(capsys, "run", "--arch", "timm:*", "--out", tmp_path / "runs")
    assert code == 2 and started == [] and len(err.splitlines()) == 1
    assert f"'timm:*' matches {count} timm models" in err and "pass --yes" in err


def test_ab_asks_for_yes_before_checking_anything_out(tmp_path, capsys):
    argv = ["ab", "HEAD", "--arch", "torchvision:*", "--repo", tmp_path]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "matches" in err and "pass --yes" in err
    code, _, err = run_cli(capsys, *argv, "--yes")
    assert code == 2 and "is not a git repository" in err
    code, _, err = run_cli(capsys, "ab", "HEAD", "--arch", "timm:", "--repo", tmp_path, "--yes")
    assert code == 2 and "'timm:' names no timm model" in err
