import math
from dataclasses import replace

import pytest
import torch

from phenomlab.errors import ConfigError, PhenomlabError
from phenomlab.models import MLP, MLPEnsemble
from phenomlab.train import TrainConfig, make_optimizer, train
from phenomlab.train.ensemble import train_ensemble
from phenomlab.train.pruning import full_masks, magnitude_prune
from phenomlab.train.sparse import (
    DynamicSparsity,
    MaskSchedule,
    drop_fraction,
    erk_densities,
    erk_masks,
    n_active_for,
    prune_and_regrow,
    random_mask,
)


def net(seed=0, width=12):
    torch.manual_seed(seed)
    return MLP(6, 3, width=width, depth=2)


def task(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()


def test_erk_densities_match_a_hand_computation():
    # layers 40x256, 256x256, 256x10 at density 0.05: raw scores (n_in + n_out) / (n_in n_out)
    shapes = {"a": (256, 40), "b": (256, 256), "c": (10, 256)}
    raw = {"a": 296 / 10240, "b": 512 / 65536, "c": 266 / 2560}
    eps = 0.05 * (10240 + 65536 + 2560) / (296 + 512 + 266)  # sum raw * n = sum (n_in + n_out)
    d = erk_densities(shapes, 0.05)
    for k in shapes:
        assert d[k] == pytest.approx(eps * raw[k], rel=1e-12)
    total = sum(d[k] * math.prod(shapes[k]) for k in shapes)
    assert total == pytest.approx(0.05 * (10240 + 65536 + 2560), rel=1e-12)


def test_erk_makes_overfull_layers_dense_and_resolves_eps():
    # at density 0.5 the 10x4 layer's ERK density would exceed 1: it becomes dense, the budget of the rest shrinks
    shapes = {"big": (100, 100), "small": (10, 4)}
    d = erk_densities(shapes, 0.5)
    assert d["small"] == 1.0
    assert d["big"] == pytest.approx((0.5 * 10040 - 40) / 10000, rel=1e-12)
    # by hand: unconstrained eps = 0.5 * 10040 / (200 + 14) gives small 14/40 * eps = 8.2 > 1
    assert 14 / 40 * 0.5 * 10040 / 214 > 1
    assert erk_densities(shapes, 1.0) == {"big": 1.0, "small": 1.0}
    with pytest.raises(ConfigError):
        erk_densities(shapes, 0.0)


def test_erk_masks_have_the_erk_counts_per_layer_and_per_member():
    ens = MLPEnsemble(6, 3, [20, 20, 20], depth=2)
    params = {n: p for n, p in ens.named_parameters() if "weights" in n}
    masks = erk_masks(params, [0.1, 0.3, 1.0], torch.Generator().manual_seed(0), member_dim=True)
    for j, dj in enumerate([0.1, 0.3, 1.0]):
        dens = erk_densities({n: tuple(p.shape[1:]) for n, p in params.items()}, dj)
        for n, p in params.items():
            assert int(masks[n][j].sum()) == n_active_for(p[j].numel(), dens[n])
    assert all(bool(m[2].all()) for m in masks.values())
    m = random_mask((4, 5), 7, torch.Generator().manual_seed(1))
    assert m.dtype == torch.bool and int(m.sum()) == 7


def test_drop_fraction_is_cosine_annealed_to_zero_at_the_end():
    assert drop_fraction(0, 0.5, 100) == 0.5
    assert drop_fraction(50, 0.5, 100) == pytest.approx(0.25)
    assert drop_fraction(100, 0.5, 100) == 0.0 and drop_fraction(150, 0.5, 100) == 0.0


def test_prune_and_regrow_keeps_the_count_and_drops_the_smallest_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 9, generator=g)
    mask = random_mask((8, 9), 30, g)
    w = w * mask
    new, grown = prune_and_regrow(w, mask, 6, grow="random", generator=g)
    assert int(new.sum()) == int(mask.sum()) == 30
    dropped = mask & ~new
    kept = mask & new
    # the dropped weights are the 6 smallest |w| among the active ones (unless regrown at once)
    assert int(dropped.sum()) + int((grown & mask).sum()) == 6
    order = w[mask].abs().sort().values
    assert float(w[dropped].abs().max()) <= float(order[5])
    assert float(w[kept & ~grown].abs().min()) >= float(order[5])
    assert int(grown.sum()) == 6 and bool((new[grown]).all())


def test_regrowth_restricted_to_allowed_positions_regrows_the_dropped_ones_in_place():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 9, generator=g)
    mask = random_mask((8, 9), 30, g)
    w = w * mask
    for grow, grad in (("random", None), ("gradient", torch.randn(8, 9, generator=g))):
        new, grown = prune_and_regrow(w, mask, 6, grow=grow, grad=grad, generator=g, allowed=mask)
        assert torch.equal(new, mask)  # nothing outside the allowed (initial) mask becomes active
        dropped_order = w[mask].abs().sort().values
        assert int(grown.sum()) == 6 and float(w[grown].abs().max()) <= float(dropped_order[5])
    # a wider allowed set: growth lands only inside it
    allowed = mask | random_mask((8, 9), 20, g)
    new, grown = prune_and_regrow(w, mask, 6, generator=g, allowed=allowed)
    assert int(new.sum()) == 30 and not bool((new & ~allowed).any())
    with pytest.raises(PhenomlabError):  # too few allowed free positions to keep the count
        prune_and_regrow(w, mask, 6, generator=g, allowed=mask & ~grown)


def test_rigl_regrows_the_largest_gradient_positions_brute_force():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(5, 7, generator=g)
    mask = random_mask((5, 7), 12, g)
    w = w * mask
    grad = torch.randn(5, 7, generator=g)
    k = 4
    new, grown = prune_and_regrow(w, mask, k, grow="gradient", grad=grad)
    # brute force: drop the k smallest active |w| one by one, then pick the k largest |grad| among the rest
    active = [(abs(float(w.view(-1)[i])), i) for i in range(35) if mask.view(-1)[i]]
    drop = {i for _, i in sorted(active)[:k]}
    after = [bool(mask.view(-1)[i]) and i not in drop for i in range(35)]
    cands = sorted((-abs(float(grad.view(-1)[i])), i) for i in range(35) if not after[i])
    grow = {i for _, i in cands[:k]}
    expect = torch.tensor([after[i] or i in grow for i in range(35)]).view(5, 7)
    assert torch.equal(new, expect)
    assert torch.equal(grown, torch.tensor([i in grow for i in range(35)]).view(5, 7))
    with pytest.raises(PhenomlabError):
        prune_and_regrow(w, mask, k, grow="gradient")


def test_prune_matches_layerwise_magnitude_pruning():
    # the drop half of one update is pruning.magnitude_prune with scope="layer" on the active weights
    model = net()
    masks = magnitude_prune(model, full_masks(model), 0.5, "layer")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, m in masks.items():
            params[n].mul_(m)
    frac = 0.25
    ref = magnitude_prune(model, masks, frac, "layer")
    for n, m in masks.items():
        k = int(round(frac * int(m.sum())))
        new, grown = prune_and_regrow(params[n], m, k, grow="random", generator=torch.Generator().manual_seed(0))
        assert torch.equal(new & ~grown, ref[n] & ~grown)


def _train_masked(model, schedule, steps=40, seed=0):
    cfg = TrainConfig(steps=steps, lr=0.05, optimizer="sgd", momentum=0.9, batch_size=16, eval_every=steps)
    opt = make_optimizer(model.parameters(), cfg)
    params = {n: p for n, p in model.named_parameters() if p.ndim >= 2}
    masks = erk_masks(params, 0.3, torch.Generator().manual_seed(seed))
    dyn = DynamicSparsity(model, masks, opt, schedule, seed=seed)
    return dyn, opt, cfg, masks


def test_one_update_keeps_density_exactly_and_regrown_weights_start_at_zero():
    model = net()
    dyn, opt, cfg, masks0 = _train_masked(model, MaskSchedule("set", interval=5, drop_fraction=0.5, end_step=100))
    before = {n: m.clone() for n, m in dyn.masks.items()}
    seen = {}

    def spy(opt_, args, kwargs):  # runs after DynamicSparsity's post-hook (registered later)
        if dyn.step == 5:
            seen.update({n: p.detach().clone() for n, p in dyn.params.items()})

    h = opt.register_step_post_hook(spy)
    x, y = task()
    train(model, (x, y), replace(cfg, steps=5), optimizer=opt)
    h.remove()
    for n, m in dyn.masks.items():
        assert int(m.sum()) == int(before[n].sum())  # each layer's density exactly unchanged
        new = m & ~before[n]
        assert int(new.sum()) > 0
        assert bool((seen[n][new] == 0).all())  # regrown weights start at exactly zero
        assert bool((seen[n][~m] == 0).all())
        buf = opt.state[dyn.params[n]]["momentum_buffer"]
        assert bool((buf[~m] == 0).all()) and bool((buf[new] == 0).all())
    assert dyn.itop_rate() > dyn.density()


def test_no_exploration_keeps_the_initial_mask_but_restarts_the_dropped_weights():
    sched = MaskSchedule("set", interval=5, drop_fraction=0.5, end_step=100, explore=False)
    model = net()
    dyn, opt, cfg, masks0 = _train_masked(model, sched)
    seen = {}

    def spy(opt_, args, kwargs):  # runs after DynamicSparsity's post-hook: the weights right after an update
        if dyn.step == 5:
            seen.update({n: p.detach().clone() for n, p in dyn.params.items()})

    opt.register_step_post_hook(spy)
    train(model, task(), cfg, optimizer=opt)
    restarted = 0
    for n, m in dyn.masks.items():
        assert torch.equal(m, masks0[n]) and torch.equal(dyn.ever[n], masks0[n])
        restarted += int((seen[n][m] == 0).sum())
    assert restarted > 0  # the update did happen: dropped weights restarted at zero inside the mask
    assert dyn.itop_rate() == dyn.density()
    # and it is not static training: the same net with a static mask ends elsewhere
    static = net()
    _, opt_s, _, _ = _train_masked(static, MaskSchedule("static"))
    train(static, task(), cfg, optimizer=opt_s)
    assert not torch.equal(static.state_dict()["fc1.weight"], model.state_dict()["fc1.weight"])


def test_static_schedule_never_changes_the_mask_and_inactive_weights_stay_zero():
    model = net()
    dyn, opt, cfg, masks0 = _train_masked(model, MaskSchedule("static"))
    train(model, task(), cfg, optimizer=opt)
    for n, m in dyn.masks.items():
        assert torch.equal(m, masks0[n])
        assert bool((dyn.params[n].detach()[~m] == 0).all())
    assert dyn.itop_rate() == pytest.approx(dyn.density())
    dyn.remove()


def test_rigl_inside_training_regrows_by_the_dense_gradient_of_the_update_step():
    model = net()
    cfg = TrainConfig(steps=10, lr=0.05, optimizer="sgd", momentum=0.9, batch_size=16, eval_every=10)
    opt = make_optimizer(model.parameters(), cfg)
    seen = {}

    # registered before DynamicSparsity's hooks, so they run first: the dense gradient and the weights of
    # step 10 before the update
    def pre(opt_, args, kwargs):
        seen["grad"] = {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    def post(opt_, args, kwargs):
        seen["w"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        seen["mask"] = {n: m.clone() for n, m in dyn.masks.items()}

    opt.register_step_pre_hook(pre)
    opt.register_step_post_hook(post)
    params = {n: p for n, p in model.named_parameters() if p.ndim >= 2}
    sched = MaskSchedule("rigl", interval=10, drop_fraction=0.3, end_step=30)
    dyn = DynamicSparsity(model, erk_masks(params, 0.3, torch.Generator().manual_seed(0)), opt, sched)
    train(model, task(), cfg, optimizer=opt)
    for n, m in dyn.masks.items():
        before = seen["mask"][n]
        k = int(round(drop_fraction(10, 0.3, 30) * int(before.sum())))
        expect, _ = prune_and_regrow(seen["w"][n], before, k, grow="gradient", grad=seen["grad"][n])
        assert torch.equal(m, expect)
        assert not torch.equal(m, before)
    assert dyn.itop_rate() > dyn.density()


def test_ensemble_members_follow_their_own_schedules_and_resume(tmp_path):
    def build():
        ens = MLPEnsemble(6, 3, [10, 10, 10], depth=1, seeds=[0, 0, 0])
        cfg = TrainConfig(steps=30, lr=0.05, optimizer="sgd", momentum=0.9, batch_size=16, eval_every=10)
        opt = make_optimizer(ens.parameters(), cfg)
        params = {n: p for n, p in ens.named_parameters() if "weights" in n}
        masks = erk_masks(params, 0.3, torch.Generator().manual_seed(0), member_dim=True)
        scheds = [MaskSchedule("static"), MaskSchedule("set", 5, 0.5, 25), MaskSchedule("rigl", 5, 0.5, 25)]
        return ens, cfg, opt, DynamicSparsity(ens, masks, opt, scheds, member_dim=True, seed=1)

    ens, cfg, opt, dyn = build()
    hist = train_ensemble(ens, task(), cfg, optimizer=opt)
    assert dyn.itop_rate(0) == pytest.approx(dyn.density(0))
    assert dyn.itop_rate(1) > dyn.density(1) and dyn.itop_rate(2) > dyn.density(2)
    # an interrupted run (checkpoint at step 20) resumes with its masks, union and step counter
    ck = tmp_path / "ens.ckpt"
    ens2, cfg2, opt2, dyn2 = build()
    train_ensemble(ens2, task(), replace(cfg2, steps=20), optimizer=opt2, checkpoint=ck)
    state = torch.load(ck, weights_only=True)
    state["history"]["finished"] = False
    torch.save(state, ck)
    ens3, cfg3, opt3, dyn3 = build()
    hist3 = train_ensemble(ens3, task(), cfg3, optimizer=opt3, checkpoint=ck)
    for n in dyn.masks:
        assert torch.equal(dyn.masks[n], dyn3.masks[n])
        assert torch.equal(dyn.ever[n], dyn3.ever[n])
    assert hist3.last("train_loss") == pytest.approx(hist.last("train_loss"), rel=1e-5)


def test_bad_input_is_rejected():
    model = net()
    opt = make_optimizer(model.parameters(), TrainConfig())
    masks = {"fc1.weight": torch.ones(3, 3, dtype=torch.bool)}
    with pytest.raises(PhenomlabError):
        DynamicSparsity(model, masks, opt, MaskSchedule())
    with pytest.raises(ConfigError):
        DynamicSparsity(model, full_masks(model), opt, MaskSchedule("magic"))
    with pytest.raises(ConfigError):
        DynamicSparsity(model, full_masks(model), opt, [MaskSchedule(), MaskSchedule()])
