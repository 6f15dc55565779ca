"""Modes: precision (autocast), memory format and compilation, applied by one code path to every task."""

import json
import time

import pytest
import torch
from support.settings import FAST_MEASURE
from torch import nn

import architectures
from bench import data
from bench.measure import modes
from bench.results import schema
from bench.cli import main
from bench.configs import RunConfig
from bench.errors import UserError
from bench.measure.modes import Amp, Mode
from bench.run.runner import Job, run_pair
from bench.tasks import TASKS, classify
from bench.tasks.base import Group, RunContext
from bench.tasks.loop import TrainClock
from bench.tasks.settings import ClassifySettings, FidSettings, GanSettings, VaeSettings
from support.cli import run_cli, run_records

CPU = torch.device("cpu")
BF16_CL = Mode(name="bf16+channels_last", precision="bf16", channels_last=True)
SLOW_BACKEND, SLOW_COMPILE_S = "archbench_slow_test", 0.6


@torch._dynamo.register_backend(name=SLOW_BACKEND)
def _slow_backend(graph_module, example_inputs):
    """A torch.compile backend that takes SLOW_COMPILE_S to 'compile' a graph, then runs it eagerly."""
    time.sleep(SLOW_COMPILE_S)
    return graph_module.forward


@torch._dynamo.register_backend(name="archbench_failing_test")
def _failing_backend(graph_module, example_inputs):
    raise RuntimeError("this backend compiles nothing")


@pytest.fixture(scope="module")
def tiny():
    return data.load("synthetic", limit_train=100, limit_test=40)


@pytest.fixture(scope="module")
def fid(tmp_path_factory):
    cache = tmp_path_factory.mktemp("fid")
    return FidSettings(epochs=1, batch_size=25, eval_batch_size=100, kid_subsets=2, cache_dir=str(cache))


@pytest.mark.parametrize(
    "text, precision, channels_last, compile_mode",
    [
        ("fp32", "fp32", False, None),
        ("bf16+channels_last", "bf16", True, None),
        ("auto+compile", "auto", False, "default"),
        ("fp16+channels_last+compile:max-autotune", "fp16", True, "max-autotune"),
    ],
)
def test_a_mode_is_parsed_from_its_parts(text, precision, channels_last, compile_mode):
    mode = modes.parse(text)
    assert (mode.name, mode.precision, mode.channels_last, mode.compile) == (text, precision, channels_last, compile_mode)


@pytest.mark.parametrize(
    "text, message",
    [
        ("bf17", "unknown precision 'bf17' (valid: fp32, bf16, fp16, auto)"),
        ("bf16+nhwc", "unexpected part 'nhwc'"),
        ("bf16+channels_last+channels_last", "unexpected part 'channels_last'"),
        ("fp32+compile:fastest", "unknown compile mode 'fastest' (valid: default, reduce-overhead, max-autotune"),
        ("", "a mode is PRECISION[+channels_last][+compile[:MODE]]"),
    ],
)
def test_a_malformed_mode_is_a_user_error_naming_the_valid_parts(text, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+").replace("[", r"\[").replace("]", r"\]")):
        modes.parse(text)


def test_the_flags_make_one_mode():
    assert modes.from_flags(None, False, None) is None
    assert modes.from_flags("bf16", True, None) == "bf16+channels_last"
    assert modes.from_flags(None, False, "default") == "fp32+compile"
    assert modes.from_flags("auto", False, "max-autotune") == "auto+compile:max-autotune"


def test_auto_resolves_to_what_the_cpu_runs_natively_and_fp32_is_never_changed():
    auto = modes.parse("auto+channels_last").resolved(CPU)
    assert auto.precision == ("bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32")
    assert auto.name == "auto+channels_last" and auto.record()["precision"] == auto.precision
    assert modes.parse("fp32").resolved(CPU).precision == "fp32"


def test_a_precision_the_cpu_lacks_runs_emulated_and_auto_keeps_to_fp32(monkeypatch):
    monkeypatch.setattr(modes, "native_bf16", lambda device: False)
    monkeypatch.setattr(modes, "native_fp16_cpu", lambda: False)
    for text in ("bf16", "fp16+channels_last"):
        mode = modes.parse(text).resolved(CPU)
        assert mode.emulated and mode.record()["emulated_precision"] is True
    for text in ("auto", "fp32"):
        mode = modes.parse(text).resolved(CPU)
        assert mode.precision == "fp32" and not mode.emulated and mode.record()["emulated_precision"] is False


def test_an_emulated_precision_is_said_once_and_recorded(monkeypatch, tiny_suite, tmp_path, capsys):
    monkeypatch.setattr(modes, "native_bf16", lambda device: False)
    code, out, err = run_cli(
        capsys, "run", "--suite", tiny_suite("cnn-baseline"), "--modes", "fp32,bf16", "--seed", "0", "1",
        "--out", tmp_path, "--quiet", "--isolation", "none",
    )
    assert code == 0, err
    (warning,) = [line for line in err.splitlines() if "emulated" in line]
    assert warning.startswith("warning: mode bf16: this CPU has no AVX512-BF16 or AMX, so bfloat16 is emulated; "
                              "matmul rate here fp32 : bfloat16 = ")
    records = run_records(tmp_path)
    assert {(r["mode"], r["seed"], r["emulated_precision"]) for r in records} == {
        ("fp32", 0, False), ("fp32", 1, False), ("bf16", 0, True), ("bf16", 1, True)
    }


def test_the_mode_is_part_of_config_id_and_auto_shares_the_id_of_what_it_resolved_to(tiny):
    settings = ClassifySettings()

    def config_id(mode):
        start = schema.start(
            architectures.get_spec("cnn-baseline"), 0, schema.Origin(run_id="r", suite="s"), data=tiny, device=CPU,
            settings=settings, measure=FAST_MEASURE, mode=mode,
        )
        return start["config_id"]

    ids = {text: config_id(modes.parse(text).resolved(CPU)) for text in ("fp32", "bf16", "fp32+channels_last")}
    assert len(set(ids.values())) == 3
    assert config_id(Mode(name="auto", precision="bf16")) == ids["bf16"]
    assert config_id(Mode(name="fp32+compile", precision="fp32", compile="default")) != ids["fp32"]


def test_bf16_autocast_runs_the_layers_in_bf16_and_keeps_the_weights_fp32():
    model = BF16_CL.prepare(architectures.create("cnn-baseline", (3, 32, 32), 10))
    x = BF16_CL.inputs(torch.randn(4, 3, 32, 32))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    with modes.compute_dtypes(model) as seen, BF16_CL.autocast(CPU):
        model(x)
    assert seen == {"bfloat16"} and all(p.dtype == torch.float32 for p in model.parameters())


def test_every_task_trains_and_evaluates_in_bf16_channels_last(tiny, fid, tmp_path):
    context = RunContext(device=CPU, seed=0, measure=FAST_MEASURE, run_dir=tmp_path, fid=fid, mode=BF16_CL)
    for task, name, settings in (
        (TASKS["classify"], "cnn-bn", ClassifySettings(epochs=2, batch_size=25, optimizer="adam")),
        (TASKS["vae"], "vae-conv", VaeSettings(epochs=1, batch_size=25, iwae_samples=4, eval_batch_size=40)),
        (TASKS["gan"], "gan-dcgan", GanSettings(epochs=1, batch_size=25, latent_dim=16, eval_batch_size=40)),
    ):
        torch.manual_seed(0)
        model = architectures.create(name, tiny.input_shape, tiny.num_classes, **settings.model_overrides())
        record = {"architecture": name}
        task.run(model, tiny, settings, context, record)
        assert record["compute_dtype"] == "bfloat16", name
        assert record["train_throughput"] > 0 and record["latency_p50_ms"] > 0, name
        assert all(p.dtype == torch.float32 for p in model.parameters()), name
        quality = {"cnn-bn": "test_accuracy", "vae-conv": "test_nll", "gan-dcgan": "fid"}[name]
        assert isinstance(record[quality], float) and record[quality] == record[quality], name


def test_the_harness_step_in_bf16_matches_a_bare_autocast_step():
    torch.manual_seed(0)
    model = architectures.create("cnn-baseline", (3, 32, 32), 10).train()
    bare = architectures.create("cnn-baseline", (3, 32, 32), 10).train()
    bare.load_state_dict(model.state_dict())
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    optimizer, bare_optimizer = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, bare))
    torch.manual_seed(1)
    loss = classify.train_step(model, optimizer, x, y, Amp(Mode(name="bf16", precision="bf16"), CPU))
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bare_loss = nn.functional.cross_entropy(bare(x).float(), y)
    bare_loss.backward()
    bare_optimizer.step()
    assert loss == bare_loss.detach()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), bare.parameters()))


def test_an_fp16_scaler_scales_the_loss_and_skips_a_step_whose_gradients_overflow():
    amp = Amp(Mode(name="fp16", precision="fp16"), CPU)
    assert amp.scaler.is_enabled() and amp.scaler.get_scale() == 2.0**16
    weight = nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    amp.step((weight * torch.tensor([1.0, float("inf"), 1.0])).sum(), optimizer)  # an overflowing gradient
    amp.update()
    assert torch.equal(weight.detach(), torch.ones(3)) and amp.scaler.get_scale() == 2.0**15
    off = Amp(Mode(), CPU)
    assert not off.scaler.is_enabled()


def test_time_in_a_paused_block_is_not_training_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    clock = TrainClock(CPU, Group())
    with clock:
        now[0] += 2.0
        with clock.paused():
            now[0] += 30.0
        now[0] += 1.0
    assert clock.seconds == 3.0


def test_compilation_time_is_kept_out_of_the_training_clock():
    model = architectures.create("cnn-baseline", (3, 32, 32), 10)
    Mode(name="fp32+compile", compile="default", compile_backend=SLOW_BACKEND).compile_modules(model)
    clock, started = TrainClock(CPU, Group()), time.perf_counter()
    with clock:
        model(torch.randn(2, 3, 32, 32))  # the first call compiles
    assert time.perf_counter() - started >= SLOW_COMPILE_S > clock.seconds + 0.3


def test_a_compiled_run_records_its_compile_time_apart_from_throughput_and_training_time(tiny, tmp_path):
    # 100 training samples in batches of 16: the last batch of each epoch has another shape, so training
    # itself triggers a compilation, besides the measured copies and the evaluation.
    config = RunConfig(tasks={"classify": ClassifySettings(epochs=2, batch_size=16)}, measure=FAST_MEASURE)
    mode = modes.parse("fp32+compile", SLOW_BACKEND).resolved(CPU)
    job = Job(name="cnn-baseline", seed=0, config=config, data=tiny, device=CPU, run_dir=tmp_path, quiet=True, mode=mode)
    record = run_pair(job)
    assert record["status"] == "ok", record.get("traceback")
    assert record["mode"] == "fp32+compile" and record["compile"] == "default"
    assert record["compile_backend"] == SLOW_BACKEND and record["compile_time_s"] >= 3 * SLOW_COMPILE_S
    assert record["train_time_s"] < SLOW_COMPILE_S, "a compilation inside training was counted as training time"
    assert 1 / max(record["train_throughput_repeats"]) * 16 < SLOW_COMPILE_S


def test_a_model_that_fails_to_compile_is_a_failed_record_saying_so(tiny, tmp_path):
    config = RunConfig(tasks={"classify": ClassifySettings(epochs=1, batch_size=25)}, measure=FAST_MEASURE)
    mode = modes.parse("fp32+compile", "archbench_failing_test").resolved(CPU)
    record = run_pair(Job(name="cnn-baseline", seed=0, config=config, data=tiny, device=CPU, run_dir=tmp_path, quiet=True, mode=mode))
    assert record["status"] == "failed" and record["error"].startswith("torch.compile failed: BackendCompilerFailed")
    assert "this backend compiles nothing" in record["error"]
    assert record["compile_time_s"] is not None


def test_an_eager_run_has_no_compile_time(tiny, tmp_path):
    config = RunConfig(tasks={"classify": ClassifySettings(epochs=1, batch_size=25)}, measure=FAST_MEASURE)
    record = run_pair(Job(name="cnn-baseline", seed=0, config=config, data=tiny, device=CPU, run_dir=tmp_path, quiet=True, mode=Mode()))
    assert record["status"] == "ok" and record["compile_time_s"] is None and record["compute_dtype"] == "float32"
    assert (record["precision"], record["memory_format"], record["compile"]) == ("fp32", "contiguous", "none")


def test_a_run_of_several_modes_records_each_and_a_resume_finishes_the_missing_one(tiny_suite, tmp_path, capsys):
    suite = tiny_suite("cnn-baseline", "cnn-bn")
    argv = ["run", "--suite", suite, "--modes", "fp32,bf16+channels_last", "--isolation", "none", "--out", tmp_path, "--quiet"]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    (path,) = tmp_path.glob("*/records.jsonl")
    got = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["architecture"], r["mode"]) for r in got] == [
        ("cnn-baseline", "fp32"), ("cnn-baseline", "bf16+channels_last"), ("cnn-bn", "fp32"), ("cnn-bn", "bf16+channels_last"),
    ]
    assert got[0]["config_id"] != got[1]["config_id"] and [r["compute_dtype"] for r in got][:2] == ["float32", "bfloat16"]
    path.write_text("".join(json.dumps(r) + "\n" for r in got[:3]))  # as if interrupted before the last
    assert main(["run", "--resume", str(path.parent), "--quiet"]) == 0, capsys.readouterr().err
    resumed = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["architecture"], r["mode"]) for r in resumed] == [(r["architecture"], r["mode"]) for r in got]
    assert resumed[:3] == got[:3] and resumed[3]["config_id"] == got[3]["config_id"]
