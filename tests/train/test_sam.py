import math

import pytest
import torch
from torch import nn

from phenomlab.errors import ConfigError, PhenomlabError
from phenomlab.models import MLP
from phenomlab.train import TrainConfig, make_optimizer, train
from phenomlab.train.ensemble import train_ensemble
from phenomlab.train.sam import SAM, sam_gradient


class Point(nn.Module):
    """A bare parameter vector w; the 'model' of a quadratic objective."""

    def __init__(self, w0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))

    def forward(self, x):
        return x


class _Interrupt(Exception):
    pass


def _interrupt_at(step: int):
    """A callback that stops training at ``step`` (a crash, for the resume tests)."""

    def boom(state):
        if state.step == step:
            raise _Interrupt

    return boom


def quadratic(a, b):
    """Objective L(w) = 1/2 w^T A w - b^T w for train(objective=...)."""
    a = torch.tensor(a, dtype=torch.float64)
    b = torch.tensor(b, dtype=torch.float64)

    def objective(model, xb, yb, step):
        w = model.w
        return 0.5 * w @ a @ w - b @ w

    return objective


DUMMY = (torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))  # an objective ignores the data


def sam_cfg(**kw):
    base = dict(steps=2, lr=0.1, optimizer="sam", sam_rho=0.5, momentum=0.9, eval_every=1)
    return TrainConfig(**{**base, **kw})


def test_two_steps_by_hand_1d():
    # L = w^2 (A = 2), w0 = 1, rho = 0.5, lr = 0.1, momentum 0.9:
    # step 1: g = 2, e = 0.5, g_SAM = 2 * 1.5 = 3, buf = 3, w1 = 1 - 0.3 = 0.7
    # step 2: g = 1.4, e = 0.5, g_SAM = 2 * 1.2 = 2.4, buf = 0.9 * 3 + 2.4 = 5.1, w2 = 0.7 - 0.51 = 0.19
    m = Point([1.0])
    h = train(m, DUMMY, sam_cfg(), objective=quadratic([[2.0]], [0.0]))
    assert float(m.w.detach()[0]) == pytest.approx(0.19, abs=1e-12)
    assert h.finished


def explicit_sam(a, b, w, lr, rho, mu, wd, steps):
    """SAM + SGD(momentum, L2 weight decay) on 1/2 w^T A w - b^T w, written out with Python floats."""
    n = len(w)

    def grad(v):
        return [sum(a[i][j] * v[j] for j in range(n)) - b[i] for i in range(n)]

    buf = None
    for _ in range(steps):
        g = grad(w)
        norm = math.sqrt(sum(gi * gi for gi in g))
        gs = grad([w[i] + rho * g[i] / norm for i in range(n)])
        d = [gs[i] + wd * w[i] for i in range(n)]
        buf = d if buf is None else [mu * buf[i] + d[i] for i in range(n)]
        w = [w[i] - lr * buf[i] for i in range(n)]
    return w


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_two_steps_match_explicit_formula_2d(wd):
    a, b, w0 = [[3.0, 1.0], [1.0, 2.0]], [1.0, -0.5], [0.8, -1.2]
    m = Point(w0)
    train(m, DUMMY, sam_cfg(lr=0.05, sam_rho=0.2, weight_decay=wd), objective=quadratic(a, b))
    want = explicit_sam(a, b, w0, lr=0.05, rho=0.2, mu=0.9, wd=wd, steps=2)
    assert m.w.tolist() == pytest.approx(want, abs=1e-12)
    # and SAM moved differently from SGD (the test would pass vacuously if rho had no effect)
    assert m.w.tolist() != pytest.approx(explicit_sam(a, b, w0, lr=0.05, rho=0.0, mu=0.9, wd=wd, steps=2), abs=1e-6)


def test_rho_zero_is_sgd_exactly():
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    out = []
    for opt in ("sgd", "sam"):
        torch.manual_seed(1)
        m = MLP(5, 2, width=16, depth=2)
        cfg = TrainConfig(steps=20, lr=0.1, optimizer=opt, sam_rho=0.0, momentum=0.9, batch_size=8, eval_every=10)
        train(m, (x, y), cfg, seed=3)
        out.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.equal(out[0], out[1])


def test_train_matches_manual_sam_step_on_a_net():
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 1] > 0).long()
    torch.manual_seed(2)
    m1 = MLP(5, 2, width=8, depth=1)
    m2 = MLP(5, 2, width=8, depth=1)
    m2.load_state_dict(m1.state_dict())
    train(m1, (x, y), TrainConfig(steps=1, lr=0.3, optimizer="sam", sam_rho=0.1, eval_every=1))
    # by hand: perturb along the normalised full gradient, take the gradient there, step from w
    params = list(m2.parameters())
    w = [p.detach().clone() for p in params]
    g = torch.autograd.grad(nn.functional.cross_entropy(m2(x), y), params)
    norm = torch.sqrt(sum((t**2).sum() for t in g))
    with torch.no_grad():
        for p, t in zip(params, g, strict=True):
            p.add_(0.1 * t / norm)
    gs = torch.autograd.grad(nn.functional.cross_entropy(m2(x), y), params)
    for p1, w0, t in zip(m1.parameters(), w, gs, strict=True):
        assert torch.allclose(p1.detach(), w0 - 0.3 * t, atol=1e-6)


def test_sam_gradient_restores_parameters_exactly():
    m = Point([0.3, -0.7])
    opt = SAM(m.parameters(), lr=0.1, rho=0.05)
    loss = quadratic([[1.0, 0.0], [0.0, 5.0]], [0.0, 0.0])
    w0 = m.w.detach().clone()
    loss(m, None, None, 0).backward()
    perturbed = sam_gradient(opt, lambda: loss(m, None, None, 0))
    assert torch.equal(m.w.detach(), w0)
    assert float(perturbed) > float(loss(m, None, None, 0))  # the ascent step raised the loss
    # the gradient now held is the one at w + rho g/||g||
    g = torch.tensor([0.3, -3.5], dtype=torch.float64)
    e = 0.05 * g / g.norm()
    assert torch.allclose(m.w.grad, torch.tensor([1.0, 5.0], dtype=torch.float64) * (w0 + e))


def test_zero_gradient_gives_no_perturbation():
    m = Point([0.0, 0.0])
    opt = SAM(m.parameters(), lr=0.1, rho=0.05)
    m.w.grad = torch.zeros(2, dtype=torch.float64)
    assert opt.perturb() == 0.0
    assert torch.equal(m.w.detach(), torch.zeros(2, dtype=torch.float64))
    opt.restore()


def test_resume_gives_same_final_weights(tmp_path):
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    cfg = TrainConfig(
        steps=30, lr=0.05, optimizer="sam", sam_rho=0.1, momentum=0.9, batch_size=8, eval_every=5,
        schedule="cosine", checkpoint_seconds=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    init = MLP(5, 3, width=16, depth=2).state_dict()
    m_ref = MLP(5, 3, width=16, depth=2)
    m_ref.load_state_dict(init)
    train(m_ref, (x, y), cfg, seed=7)

    boom = _interrupt_at(15)

    ckpt = tmp_path / "run.ckpt"
    m = MLP(5, 3, width=16, depth=2)
    m.load_state_dict(init)
    with pytest.raises(_Interrupt):
        train(m, (x, y), cfg, seed=7, checkpoint=ckpt, callbacks=[boom])
    m2 = MLP(5, 3, width=16, depth=2)
    m2.load_state_dict(init)
    train(m2, (x, y), cfg, seed=7, checkpoint=ckpt)
    for a, b in zip(m_ref.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_make_optimizer_and_config_validation():
    opt = make_optimizer(nn.Linear(2, 2).parameters(), TrainConfig(optimizer="sam", sam_rho=0.2, momentum=0.5))
    assert isinstance(opt, SAM) and opt.param_groups[0]["rho"] == 0.2 and opt.param_groups[0]["momentum"] == 0.5
    assert TrainConfig().sam_rho == 0.05
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="sam_rho"):
            TrainConfig(optimizer="sam", sam_rho=bad).validate()
    with pytest.raises(ConfigError, match="rho"):
        SAM(nn.Linear(2, 2).parameters(), lr=0.1, rho=-1.0)


def test_ensemble_refuses_sam():
    from phenomlab.models import MLPEnsemble

    ens = MLPEnsemble(5, 2, widths=[4, 8])
    with pytest.raises(ConfigError, match="sam"):
        train_ensemble(ens, DUMMY, TrainConfig(optimizer="sam"))


def _mlp_data():
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def _flat(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_default_direction_is_ascent_bit_for_bit():
    # the explicit ascent option and the default give identical weights after 20 steps on an MLP
    x, y = _mlp_data()
    cfg = TrainConfig(steps=20, lr=0.05, optimizer="sam", sam_rho=0.1, momentum=0.9, batch_size=8, eval_every=10)
    out = []
    for kw in ({}, {"direction": "ascent"}, None):
        torch.manual_seed(0)
        m = MLP(5, 3, width=16, depth=2)
        opt = None if kw is None else SAM(m.parameters(), lr=0.05, rho=0.1, momentum=0.9, **kw)
        train(m, (x, y), cfg, seed=7, optimizer=opt)
        out.append(_flat(m))
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_random_direction_perturbation_has_radius_rho_and_is_not_the_gradient():
    m = Point([0.3, -0.7, 1.1])
    opt = SAM(m.parameters(), lr=0.1, rho=0.05, direction="random", seed=4)
    w0 = m.w.detach().clone()
    m.w.grad = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    es = []
    for _ in range(3):
        assert opt.perturb() == pytest.approx(1.0)  # still returns ||g||
        es.append(m.w.detach() - w0)
        opt.restore()
        assert torch.equal(m.w.detach(), w0)
    for e in es:
        assert float(e.norm()) == pytest.approx(0.05, rel=1e-12)
        # not the ascent direction (0.05, 0, 0)
        assert float(e[0]) != pytest.approx(0.05, abs=1e-6)
    assert not torch.allclose(es[0], es[1])  # a fresh draw every step
    # the draw is u / ||u|| with u ~ N(0, I) from a generator seeded with the seed, in float64 on the CPU
    u = torch.randn(3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.allclose(es[0], 0.05 * u / u.norm(), atol=1e-15)
    # a zero gradient does not stop the random direction (it does not depend on g)
    m.w.grad = torch.zeros(3, dtype=torch.float64)
    opt.perturb()
    assert float((m.w.detach() - w0).norm()) == pytest.approx(0.05, rel=1e-12)
    opt.restore()


def test_descent_direction_two_steps_by_hand_1d():
    # L = w^2, w0 = 1, rho = 0.5, lr = 0.1, momentum 0.9, e = -rho g/|g|:
    # step 1: g = 2, e = -0.5, g_SAM = 2 * 0.5 = 1, buf = 1, w1 = 1 - 0.1 = 0.9
    # step 2: g = 1.8, e = -0.5, g_SAM = 2 * 0.4 = 0.8, buf = 0.9 * 1 + 0.8 = 1.7, w2 = 0.9 - 0.17 = 0.73
    m = Point([1.0])
    opt = SAM(m.parameters(), lr=0.1, rho=0.5, momentum=0.9, direction="descent")
    train(m, DUMMY, sam_cfg(), objective=quadratic([[2.0]], [0.0]), optimizer=opt)
    assert float(m.w.detach()[0]) == pytest.approx(0.73, abs=1e-12)
    # the perturbation is minus the ascent one, radius rho, in several dimensions; a zero gradient leaves w alone
    m = Point([0.3, -0.7, 1.1])
    opt = SAM(m.parameters(), lr=0.1, rho=0.05, direction="descent")
    w0 = m.w.detach().clone()
    m.w.grad = torch.tensor([3.0, -4.0, 0.0], dtype=torch.float64)
    assert opt.perturb() == pytest.approx(5.0)
    assert torch.allclose(m.w.detach() - w0, torch.tensor([-0.03, 0.04, 0.0], dtype=torch.float64), atol=1e-15)
    opt.restore()
    m.w.grad = torch.zeros(3, dtype=torch.float64)
    opt.perturb()
    assert torch.equal(m.w.detach(), w0)
    opt.restore()
    assert "sam_random_direction_generator" not in opt.state_dict()


def test_random_direction_is_seeded_and_differs_from_ascent():
    x, y = _mlp_data()
    cfg = TrainConfig(steps=20, lr=0.05, optimizer="sam", sam_rho=0.1, momentum=0.9, batch_size=8, eval_every=10)
    out = {}
    for key, kw in {"r1": {"seed": 1}, "r1b": {"seed": 1}, "r2": {"seed": 2}, "ascent": None}.items():
        torch.manual_seed(0)
        m = MLP(5, 3, width=16, depth=2)
        opt = None if kw is None else SAM(m.parameters(), lr=0.05, rho=0.1, momentum=0.9, direction="random", **kw)
        train(m, (x, y), cfg, seed=7, optimizer=opt)
        out[key] = _flat(m)
    assert torch.equal(out["r1"], out["r1b"])
    assert not torch.allclose(out["r1"], out["r2"], atol=1e-6)
    assert not torch.allclose(out["r1"], out["ascent"], atol=1e-6)


def test_random_direction_resume_gives_same_final_weights(tmp_path):
    # the generator state travels in the checkpoint: a resumed run draws the directions the uninterrupted one drew
    x, y = _mlp_data()
    cfg = TrainConfig(
        steps=30, lr=0.05, optimizer="sam", sam_rho=0.1, momentum=0.9, batch_size=8, eval_every=5,
        checkpoint_seconds=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    init = MLP(5, 3, width=16, depth=2).state_dict()

    def fresh():
        m = MLP(5, 3, width=16, depth=2)
        m.load_state_dict(init)
        return m, SAM(m.parameters(), lr=0.05, rho=0.1, momentum=0.9, direction="random", seed=3)

    m_ref, opt = fresh()
    train(m_ref, (x, y), cfg, seed=7, optimizer=opt)

    boom = _interrupt_at(15)

    ckpt = tmp_path / "run.ckpt"
    m, opt = fresh()
    with pytest.raises(_Interrupt):
        train(m, (x, y), cfg, seed=7, checkpoint=ckpt, callbacks=[boom], optimizer=opt)
    m2, opt2 = fresh()
    train(m2, (x, y), cfg, seed=7, checkpoint=ckpt, optimizer=opt2)
    assert torch.equal(_flat(m_ref), _flat(m2))


def test_direction_validation_and_state_mismatch():
    with pytest.raises(ConfigError, match="direction"):
        SAM(nn.Linear(2, 2).parameters(), lr=0.1, direction="sideways")
    rand = SAM(nn.Linear(2, 2).parameters(), lr=0.1, direction="random")
    asc = SAM(nn.Linear(2, 2).parameters(), lr=0.1)
    assert "sam_random_direction_generator" not in asc.state_dict()
    with pytest.raises(PhenomlabError, match="random-direction"):
        asc.load_state_dict(rand.state_dict())
    with pytest.raises(PhenomlabError, match="random-direction"):
        rand.load_state_dict(asc.state_dict())
