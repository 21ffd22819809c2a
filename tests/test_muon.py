"""Muon (trainer.optim): Newton-Schulz orthogonalisation checked against the SVD, one optimiser step
against a hand computation and against torch.optim.Muon, the SGD groups against torch.optim.SGD."""
from __future__ import annotations

import math

import pytest
import torch

from trainer.config import resolve
from trainer.models import create_model
from trainer.optim import NS_COEFFICIENTS, Muon, build_optimizer, newton_schulz


def quintic(s: torch.Tensor, steps: int) -> torch.Tensor:
    """What ``steps`` Newton-Schulz iterations do to each singular value (after the Frobenius scaling)."""
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


@pytest.mark.parametrize("shape", [(64, 216), (256, 64)])  # block-1 conv filters (out, in*3*3); a tall matrix
@pytest.mark.parametrize("steps", [3, 5])
def test_newton_schulz_maps_singular_values_by_the_quintic_and_keeps_the_singular_vectors(shape, steps):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    out = newton_schulz(g, steps).double()
    assert out.dtype == torch.float64 and out.shape == g.shape
    expected = quintic(s / s.norm(), steps)
    got = torch.linalg.svdvals(out)
    # bf16 arithmetic (8-bit mantissa) over a few matrix products: a few per cent.
    torch.testing.assert_close(got.sort().values, expected.sort().values, atol=0.04, rtol=0.04)
    # Same singular vectors: in the input's SVD basis the output is (nearly) diagonal.
    core = u.T @ out @ vh.T
    off = core - torch.diag(core.diagonal())
    assert off.norm() / core.norm() < 0.05
    if steps == 5:  # the published behaviour: singular values end up roughly in [0.5, 1.5], not at exactly 1
        assert 0.5 < got.min() and got.max() < 1.5
        # so the result is close to the exact orthogonal polar factor U V^T
        polar = u @ vh
        assert torch.nn.functional.cosine_similarity(out.flatten(), polar.flatten(), dim=0) > 0.95


def test_muon_step_matches_a_hand_computation():
    """Diagonal weights and gradients stay diagonal, so Newton-Schulz acts on each diagonal entry
    (normalised by the Frobenius norm) through the scalar quintic: the two steps below are worked by hand."""
    lr, mu, steps = 0.1, 0.6, 3
    w = torch.tensor([[3.0, 0.0], [0.0, 4.0]]).view(2, 1, 1, 2)
    w.requires_grad_(True)
    opt = Muon([dict(params=[w], lr=lr, momentum=mu, muon=True)], lr=lr, momentum=mu, ns_steps=steps)
    g1, g2 = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0])

    def ns(d):  # Newton-Schulz of diag(d)
        return quintic(d / d.norm(), steps)

    def renorm(d):  # ||w|| becomes sqrt(out channels) = sqrt(2)
        return d * math.sqrt(2) / d.norm()

    w.grad = torch.diag(g1).view(2, 1, 1, 2)
    opt.step()
    expected1 = renorm(torch.tensor([3.0, 4.0])) - lr * ns((1 + mu) * g1)  # buf = g1; direction g1 + mu * g1
    torch.testing.assert_close(w.detach().view(2, 2), torch.diag(expected1), atol=5e-3, rtol=0)

    w.grad = torch.diag(g2).view(2, 1, 1, 2)
    opt.step()
    buf = mu * g1 + g2
    expected2 = renorm(expected1) - lr * ns(g2 + mu * buf)
    torch.testing.assert_close(w.detach().view(2, 2), torch.diag(expected2), atol=5e-3, rtol=0)


def test_muon_matches_torch_optim_muon_on_a_square_matrix():
    """torch.optim.Muon (an independent implementation, 2-D only) keeps an exponential-average momentum
    ``buf <- mu buf + (1 - mu) g``: a constant multiple of ours, which Newton-Schulz's normalisation
    removes. It does not renormalise the weight, so we do that to its copy before each step."""
    gen = torch.Generator().manual_seed(1)
    w0 = torch.randn(32, 32, generator=gen)
    w0 *= math.sqrt(32) / w0.norm()
    ours, ref = w0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
    lr, mu = 0.05, 0.6
    opt = Muon([dict(params=[ours], lr=lr, momentum=mu, muon=True)], lr=lr, momentum=mu, ns_steps=5)
    opt_ref = torch.optim.Muon([ref], lr=lr, weight_decay=0.0, momentum=mu, nesterov=True, ns_steps=5)
    for _ in range(4):
        g = torch.randn(32, 32, generator=gen)
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        with torch.no_grad():
            ref.mul_(math.sqrt(32) / ref.norm())
        opt_ref.step()
        torch.testing.assert_close(ours.detach(), ref.detach(), atol=3e-3, rtol=0)


def test_muon_recipe_groups_and_sgd_groups_equal_torch_sgd():
    cfg = resolve("fast")
    torch.manual_seed(0)
    net = create_model("fast")
    opt = build_optimizer(net, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    trainable_filters = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad}
    assert {id(p) for p in groups["filters"]["params"]} == trainable_filters and len(trainable_filters) == 6
    assert id(net.whiten.weight) not in trainable_filters  # the fixed whitening filters never train
    assert [p is net.head.linear.weight for p in groups["weights"]["params"]] == [True]

    # Every non-Muon group takes exactly torch.optim.SGD's step (same hyper-parameters, same gradients).
    sgd_groups = [g for g in opt.param_groups if not g["muon"]]
    copies = [[p.detach().clone().requires_grad_(True) for p in g["params"]] for g in sgd_groups]
    ref = torch.optim.SGD([dict(params=c, lr=g["lr"], weight_decay=g["weight_decay"]) for c, g in zip(copies, sgd_groups)],
                          lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y, reduction="sum").backward()
        for g, c in zip(sgd_groups, copies):
            for p, q in zip(g["params"], c):
                q.grad = p.grad.clone()
        opt.step()
        ref.step()
    for g, c in zip(sgd_groups, copies):
        for p, q in zip(g["params"], c):
            assert torch.equal(p.detach(), q.detach())
    for p in groups["filters"]["params"]:  # renormalised, then moved by an update of spectral norm ~1
        assert abs(p.norm().item() / math.sqrt(p.size(0)) - 1) < 0.5


def test_muon_optimizer_state_round_trips_through_state_dict():
    torch.manual_seed(0)
    net = create_model("fast")
    cfg = resolve("fast")
    opt = build_optimizer(net, cfg)
    net(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    again = build_optimizer(net, cfg)
    again.load_state_dict(opt.state_dict())
    for p in net.parameters():
        if p in opt.state:
            assert torch.equal(opt.state[p]["momentum_buffer"], again.state[p]["momentum_buffer"])


@pytest.mark.timeout(300)
def test_fast_recipe_muon_learns_and_writes_a_run(cifar_dir, tmp_path):
    from trainer.rundir import load_run
    from trainer.train import train

    out = train(resolve("fast", data_dir=str(cifar_dir), train_subset=2000, test_subset=1000, epochs=2,
                        batch_size=500, out=str(tmp_path / "muon")))
    run = load_run(out)
    assert run.meta["config"]["optimizer"] == "muon" and run.meta["test_accuracy_tta"] is not None
    assert run.history[1]["train_loss"] < run.history[0]["train_loss"]
    assert run.meta["test_accuracy"] > 0.25  # 8 steps on 2,000 images; chance is 0.1
