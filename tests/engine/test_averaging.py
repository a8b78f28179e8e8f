"""Weight averaging: the EMA's arithmetic, its BatchNorm statistics and resume (a real training that validates,
saves and promotes the average is in test_runs' kill-and-resume test)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from emseg.engine.averaging import WeightAverage


def trainer(network: torch.nn.Module, values: torch.Tensor, epoch_length: int) -> Engine:
    """An engine whose iteration ``i`` sets the network's weight to ``values[i]`` (what an optimizer step does)."""

    def step(engine, _):
        with torch.no_grad():
            network.weight.copy_(values[engine.state.iteration - 1].view_as(network.weight))

    engine = Engine(step)
    engine.state.epoch_length = epoch_length
    return engine


def reference_ema(values: torch.Tensor, decay: float) -> torch.Tensor:
    mean = values[0].clone()
    for n, value in enumerate(values[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        mean = d * mean + (1 - d) * value
    return mean


def test_the_average_follows_the_stated_decay_and_warm_up():
    network = torch.nn.Linear(3, 1, bias=False)
    values = torch.randn(200, 3, dtype=torch.float64).float()
    average = WeightAverage(network, epochs=2)
    engine = trainer(network, values, epoch_length=25)
    average.attach(engine)
    engine.run(range(25), max_epochs=8)
    assert average.decay == pytest.approx(1 - 1 / 50)
    torch.testing.assert_close(average.network.weight.detach().view(-1), reference_ema(values, 1 - 1 / 50),
                               rtol=0, atol=1e-6)
    assert average.network is not network and torch.equal(network.weight.detach().view(-1), values[-1])


def test_the_average_removes_step_noise():
    """Weights that jitter around a target: the average's error is a fraction of one step's, as the decay says
    (std ratio sqrt((1 - d) / (1 + d)) for independent noise)."""
    torch.manual_seed(0)
    network = torch.nn.Linear(1000, 1, bias=False)
    target = torch.randn(1000)
    values = target + 0.1 * torch.randn(400, 1000)
    average = WeightAverage(network, epochs=4)
    engine = trainer(network, values, epoch_length=10)
    average.attach(engine)
    engine.run(range(10), max_epochs=40)
    error = (average.network.weight.detach().view(-1) - target).std().item()
    expected = 0.1 * ((1 / 40) / (2 - 1 / 40)) ** 0.5
    assert error == pytest.approx(expected, rel=0.1)


def test_batchnorm_statistics_are_averaged_and_its_counter_kept():
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).train()
    average = WeightAverage(network, epochs=1)
    engine = Engine(lambda engine, batch: network(batch))
    average.attach(engine)
    engine.run([torch.randn(4, 1, 8, 8)] * 10 + [torch.randn(4, 1, 8, 8) + 10.0] * 10, max_epochs=1)
    live, averaged = network[1], average.network[1]
    assert averaged.num_batches_tracked == live.num_batches_tracked == 20
    # the live statistics moved towards the shifted batches; the average (decay 0.95) lags them but has moved
    assert bool((averaged.running_mean.abs() < live.running_mean.abs()).all())
    assert bool((averaged.running_mean.abs() > 0.1 * live.running_mean.abs()).all())


def test_an_update_reads_nothing_back_from_the_device():
    """The average counts its updates on the host: on PyTorch's meta device, where any read back fails, updates run
    (AveragedModel's own update compares its counter on the device, a wait on a GPU every iteration)."""
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).to("meta")
    average = WeightAverage(network, epochs=1)
    average.decay = 0.99
    for _ in range(3):
        average.update(network)
    assert average._count == 3 and average.network[0].weight.device.type == "meta"


def test_off_means_the_trained_network_itself():
    network = torch.nn.Linear(2, 2)
    average = WeightAverage(network, epochs=0)
    assert average.network is network and average.state_dict() == {}
    with pytest.raises(ValueError, match="weight_average_epochs must be >= 0"):
        WeightAverage(network, epochs=-1)


def test_a_resumed_average_continues_where_it_stopped():
    values = torch.randn(60, 3)
    whole = torch.nn.Linear(3, 1, bias=False)
    straight = WeightAverage(whole, epochs=1)
    engine = trainer(whole, values, epoch_length=10)
    straight.attach(engine)
    engine.run(range(10), max_epochs=6)

    first = torch.nn.Linear(3, 1, bias=False)
    before = WeightAverage(first, epochs=1)
    engine = trainer(first, values, epoch_length=10)
    before.attach(engine)
    engine.run(range(10), max_epochs=3)
    saved = {"model": first.state_dict(), "weight_average": before.state_dict()}

    second = torch.nn.Linear(3, 1, bias=False)
    after = WeightAverage(second, epochs=1)
    second.load_state_dict(saved["model"])
    after.load_state_dict(saved["weight_average"])
    engine = trainer(second, values, epoch_length=10)
    after.attach(engine)
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 3) or setattr(e.state, "iteration", 30))
    engine.run(range(10), max_epochs=6)
    torch.testing.assert_close(after.network.weight, straight.network.weight, rtol=0, atol=1e-7)


def test_an_unknown_selection_is_refused_by_name(tmp_path):
    from emseg.engine.runs import TrainingRun

    with pytest.raises(ValueError, match="model_selection must be 'best' or 'last', got 'mean'"):
        TrainingRun(str(tmp_path / "run"), {"model": torch.nn.Linear(1, 1)}, selection="mean")
