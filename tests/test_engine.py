"""The plain torch engine: DeepSpeed's calls (backward, step with accumulation and clipping,
checkpoints) for a model that needs no DeepSpeed. No Ray workers: the engine is plain torch."""

from __future__ import annotations

import torch

from fdsl.platform.train.engine import STATE_FILE, TorchEngine


def _model_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def test_two_accumulated_halves_step_as_one_batch():
    x, y = torch.randn(8, 6, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 3
    whole, whole_opt = _model_and_optimizer()
    engine = TorchEngine(whole, whole_opt, world=1)
    engine.backward(torch.nn.functional.cross_entropy(engine(x), y))
    engine.step()
    halves, halves_opt = _model_and_optimizer()
    engine = TorchEngine(halves, halves_opt, world=1, grad_accum_steps=2)
    for part in (slice(0, 4), slice(4, 8)):
        engine.backward(torch.nn.functional.cross_entropy(engine(x[part]), y[part]))
        engine.step()  # the first call only accumulates
    for a, b in zip(whole.parameters(), halves.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert all(p.grad is None for p in halves.parameters())  # zeroed after the real step


def test_clipping_and_checkpoint_round_trip(tmp_path):
    model, _ = _model_and_optimizer()
    engine = TorchEngine(model, torch.optim.SGD(model.parameters(), lr=1.0), world=1, clip_grad=1e-3)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    engine.backward(1e4 * engine(torch.ones(2, 6)).sum())
    engine.step()  # SGD with lr 1 moves the parameters by exactly the clipped gradient
    moved = (torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm().item()
    assert 0 < moved <= 1e-3 * (1 + 1e-4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    engine = TorchEngine(model, optimizer, world=1)
    engine.backward(engine(torch.ones(2, 6)).sum())
    engine.step()
    engine.save_checkpoint(tmp_path, "state", {"step": 7})
    assert (tmp_path / "state" / STATE_FILE).is_file()
    fresh, fresh_opt = _model_and_optimizer(seed=1)
    _, client = TorchEngine(fresh, fresh_opt, world=1).load_checkpoint(tmp_path, "state")
    assert client == {"step": 7}
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert fresh_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
