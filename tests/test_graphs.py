"""`perf.cuda_graph`: what a CPU can check of it. The captured replays themselves are checked in
test_cuda.py; here the same iterations run eagerly through the graphs' static buffers, recipes
a graph cannot replay are refused before any work starts, and without a GPU such a recipe
trains eagerly."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from gankit.components.schedules import D_REGULARIZE, D_STEP, G_STEP, Phase
from gankit.config.recipe import load_recipe
from gankit.config.sections import AdamParams
from gankit.core.errors import GankitError, RecipeError
from gankit.training.graphs import IterationGraphs
from gankit.training.iteration import Inputs
from gankit.training.optim import keep_implementation, make_adam
from gankit.training.trainer import Trainer

from conftest import REFERENCE_RECIPE, TINY

# EMA, a cosine learning rate, R1 and path length every 2 steps, and ADA with a moving p:
# device-side weights, rates, means and probabilities, augmentation draws keyed by the device's
# step count, two patterns
EVERYTHING = [
    *TINY,
    "data.subset=64",
    "train.log_every=3",
    "train.sample_every=100",
    "ema.decay=0.9",
    "optim.generator.lr_schedule=cosine",
    "regularizer={name: r1, weight: 1.0, every: 2}",
    "regularizers=[{name: path_length, every: 2}]",
    "augment={name: ada, p: 0.5, interval: 1, speed_kimg: 0.05}",
]


# every kind of scheduled value, each moving within the 6 iterations
SCHEDULED = [
    *TINY,
    "data.subset=64",
    "train.sample_every=100",
    "optim.generator.lr={start: 4.0e-4, end: 1.0e-4, kimg: 0.064}",
    "optim.discriminator.betas=[0.5, {start: 0.9, end: 0.99, kimg: 0.064}]",
    "regularizer={name: r1, weight: {start: 1.0, end: 0.1, kimg: 0.064}, every: 2}",
    "augment={name: ada, adaptive: false, p: {start: 0.8, end: 0.2, kimg: 0.064}}",
    "ema.half_life_kimg={start: 0.01, end: 0.1, kimg: 0.064}",
]


def run(tmp_path, name: str, steps: int, staged: bool, overrides=EVERYTHING) -> Trainer:
    recipe = load_recipe(REFERENCE_RECIPE, [*overrides, f"output_dir={tmp_path / name}"])
    trainer = Trainer(recipe)
    if staged:
        trainer.iteration.capture_graphs(capture=False)
    batches = trainer.inputs.batches()
    for _ in range(steps):
        trainer.train_step(*trainer.inputs.next(batches, trainer.step))
    return trainer


def state(trainer: Trainer) -> dict[str, torch.Tensor]:
    networks = {
        "G": trainer.parts.generator,
        "D": trainer.parts.discriminator,
        "EMA": trainer.parts.ema.module,
    }
    return {
        f"{name}.{key}": value
        for name, network in networks.items()
        for key, value in network.state_dict().items()
    }


def test_iterations_through_the_static_buffers_train_exactly_like_eager(
    tmp_path, mnist_root, deterministic
):
    eager = run(tmp_path, "eager", 6, staged=False)
    staged = run(tmp_path, "staged", 6, staged=True)
    graphs = staged.iteration.graphs
    path_length = Phase("generator", "regularize", regularizer=1)
    regular = (D_STEP, G_STEP, G_STEP)
    regularized = (*regular, D_REGULARIZE, path_length)
    assert graphs.eager_runs == {regular: 3, regularized: 3} and graphs.replays == 0
    expected, got = state(eager), state(staged)
    assert expected.keys() == got.keys()
    if staged.accelerator.device.type == "cpu":  # deterministic kernels: bit for bit
        assert all(torch.equal(expected[key], got[key]) for key in expected), [
            key for key in expected if not torch.equal(expected[key], got[key])
        ]
        assert all(
            torch.equal(eager.iteration.loss_sums[name], total)
            for name, total in staged.iteration.loss_sums.items()
        )
    else:  # CUDA: the staged iterations run on a side stream, with deterministic cuDNN
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            staged.iteration.loss_sums, eager.iteration.loss_sums, rtol=1e-4, atol=1e-5
        )
    assert eager.iteration.updates == staged.iteration.updates
    assert int(staged.iteration.device_step) == staged.step == 6
    eager_state, staged_state = eager.iteration.state_dict(), staged.iteration.state_dict()
    assert float(eager_state["augment"]["p"]) != 0.5
    for key in ("augment", "regularizers"):
        assert repr(eager_state[key]) == repr(staged_state[key]), key
    assert (
        staged.parts.g_optimizer.param_groups[0]["lr"]
        == eager.parts.g_optimizer.param_groups[0]["lr"]
    )


def test_scheduled_values_through_the_static_buffers_train_exactly_like_eager(
    tmp_path, mnist_root, deterministic
):
    eager = run(tmp_path, "eager", 6, staged=False, overrides=SCHEDULED)
    staged = run(tmp_path, "staged", 6, staged=True, overrides=SCHEDULED)
    assert staged.iteration.graphs.eager_runs  # the staged path ran
    expected, got = state(eager), state(staged)
    if staged.accelerator.device.type == "cpu":
        assert all(torch.equal(expected[key], got[key]) for key in expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    values = staged.parts.value_schedules.values(5)
    assert float(staged.parts.augment.p) == pytest.approx(values["augment.p"])
    assert float(staged.parts.regularizers["d_r1"].weight) == pytest.approx(values["d_r1.weight"])
    assert values["augment.p"] < 0.8  # it moved


def test_static_buffers_refuse_a_change_of_shape():
    graphs = IterationGraphs(lambda inputs, phases: None, capture=False)
    graphs.run(Inputs(torch.zeros(4, 1), torch.zeros(4, 2)), (D_STEP,))
    graphs.run(Inputs(torch.ones(4, 1), torch.ones(4, 2)), (D_STEP,))
    assert torch.equal(graphs.static.real, torch.ones(4, 1))  # copied in, not replaced
    with pytest.raises(GankitError, match=r"real changed from \(4, 1\) float32 to \(3, 1\)"):
        graphs.run(Inputs(torch.zeros(3, 1), torch.zeros(3, 2)), (D_STEP,))
    with pytest.raises(GankitError, match=r"z changed from \(4, 2\) float32 to \(4, 2\) int64"):
        graphs.run(Inputs(torch.zeros(4, 1), torch.zeros(4, 2, dtype=torch.long)), (D_STEP,))
    with pytest.raises(GankitError, match="real_labels changed from none"):
        graphs.run(Inputs(torch.zeros(4, 1), torch.zeros(4, 2), torch.zeros(4)), (D_STEP,))


@pytest.mark.parametrize(
    ("overrides", "conflict"),
    [
        (["mixed_precision=fp16"], "mixed_precision: fp16"),
        (["train.on_nan=skip"], "train.on_nan: skip"),
        (["perf.compile=true"], "perf.compile"),
    ],
)
def test_recipes_that_a_graph_cannot_replay_are_refused(overrides, conflict):
    with pytest.raises(RecipeError) as error:
        load_recipe(REFERENCE_RECIPE, [*overrides, "perf.cuda_graph=true"])
    message = str(error.value)
    assert "perf: cuda_graph cannot be combined with " + conflict in message
    assert "[set by override 'perf." in message
    load_recipe(REFERENCE_RECIPE, overrides)  # each is fine without the graph


@pytest.fixture
def cpu_only(monkeypatch):
    """This process as on a machine without a GPU. Accelerate keeps the device it chose first
    for the whole process, so its state is reset before (and after) as well."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_without_a_gpu_cuda_graph_recipes_train_eagerly_and_say_so(
    tmp_path, mnist_root, cpu_only, capsys
):
    overrides = [*TINY, "data.subset=64", "train.steps=2", "train.log_every=1"]
    graph = Trainer(
        load_recipe(
            REFERENCE_RECIPE, [*overrides, "perf.cuda_graph=true", f"output_dir={tmp_path / 'g'}"]
        )
    )
    assert graph.iteration.graphs is None
    assert "perf.cuda_graph needs one process on a CUDA GPU, but this runs on cpu" in (
        capsys.readouterr().err
    )
    graph.fit()
    eager = Trainer(load_recipe(REFERENCE_RECIPE, [*overrides, f"output_dir={tmp_path / 'e'}"]))
    eager.fit()
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            graph.parts.generator.parameters(), eager.parts.generator.parameters(), strict=True
        )
    )
    assert not isinstance(graph.parts.g_optimizer.param_groups[0]["lr"], torch.Tensor)


def adam(lr: float = 0.1, **kwargs) -> torch.optim.Adam:
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([parameter], lr=lr, **kwargs)
    parameter.grad = torch.ones(3)
    optimizer.step()
    return optimizer


def test_a_loaded_state_keeps_the_optimizers_kernels_and_learning_rate_kind():
    saved = adam(lr=0.05).state_dict()  # foreach, float learning rate
    fused = adam(fused=True)
    keep_implementation(fused)
    fused.load_state_dict(saved)
    assert fused.param_groups[0]["fused"] is True and fused.param_groups[0]["lr"] == 0.05

    capturable = make_adam(
        [torch.nn.Parameter(torch.ones(3))], AdamParams(), capturable_on=torch.device("cpu")
    )
    keep_implementation(capturable)
    capturable.load_state_dict(saved)
    group = capturable.param_groups[0]
    assert group["capturable"] is True and isinstance(group["lr"], torch.Tensor)
    assert float(group["lr"]) == pytest.approx(0.05)
    assert isinstance(group["initial_lr"], float)  # schedules scale it without a host sync

    plain = adam()
    keep_implementation(plain)
    plain.load_state_dict(capturable.state_dict())  # a tensor rate becomes a float again
    assert plain.param_groups[0]["lr"] == pytest.approx(0.05)
    assert not isinstance(plain.param_groups[0]["lr"], torch.Tensor)
    assert not plain.param_groups[0]["capturable"]
    plain.step()


def test_a_capturable_optimizer_survives_accelerates_device_placement():
    """The optimizers are made capturable when built, before `prepare`: Accelerate's device
    placement reloads their state and must keep the device learning rate and the flag."""
    network = torch.nn.Linear(2, 1)
    optimizer = make_adam(
        network.parameters(), AdamParams(lr=0.01), capturable_on=torch.device("cpu")
    )
    _, prepared = Accelerator(cpu=True).prepare(network, optimizer)
    group = prepared.optimizer.param_groups[0]
    assert group["capturable"] is True and group["fused"] is None
    assert isinstance(group["lr"], torch.Tensor) and float(group["lr"]) == pytest.approx(0.01)
    assert group["initial_lr"] == 0.01 and isinstance(group["initial_lr"], float)
    assert group["params"] == list(network.parameters())


def test_resuming_with_fused_adam_switched_on_uses_it(tmp_path, mnist_root):
    common = [*TINY, "data.subset=64", "train.checkpoint_every=2", f"output_dir={tmp_path}"]
    Trainer(load_recipe(REFERENCE_RECIPE, [*common, "train.steps=2"])).fit()
    resumed = Trainer(
        load_recipe(REFERENCE_RECIPE, [*common, "train.steps=4", "perf.fused_adam=true"])
    )
    resumed.fit()
    assert resumed.step == 4
    for optimizer in (resumed.parts.g_optimizer, resumed.parts.d_optimizer):
        assert optimizer.param_groups[0]["fused"] is True
