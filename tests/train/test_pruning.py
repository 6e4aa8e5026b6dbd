import pytest
import torch

from phenomlab.errors import PhenomlabError
from phenomlab.models import MLP
from phenomlab.train import TrainConfig, make_optimizer, train
from phenomlab.train.pruning import (
    apply_masks,
    attach_masks,
    full_masks,
    layer_sparsity,
    magnitude_prune,
    prunable_parameters,
    random_masks,
    rewind,
    sparsity,
    state_copy,
)


def net(seed=0):
    torch.manual_seed(seed)
    return MLP(6, 3, width=10, depth=2)


def task(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()


def test_prunable_parameters_are_weight_matrices():
    assert sorted(prunable_parameters(net())) == ["fc1.weight", "fc2.weight", "out.weight"]
    assert list(prunable_parameters(net(), ["out.weight"])) == ["out.weight"]
    with pytest.raises(PhenomlabError):
        prunable_parameters(net(), ["nope.weight"])


def test_full_masks_are_dense():
    m = full_masks(net())
    assert sparsity(m) == 0.0
    assert all(v.dtype == torch.bool and bool(v.all()) for v in m.values())


def test_global_prune_removes_the_smallest_weights_overall():
    model = net()
    masks = magnitude_prune(model, full_masks(model), 0.2, "global")
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in prunable_parameters(model).values())
    kept = [params[n].detach().abs()[m] for n, m in masks.items()]
    dropped = [params[n].detach().abs()[~m] for n, m in masks.items()]
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.2 * total)
    assert float(torch.cat(dropped).max()) <= float(torch.cat(kept).min())


def test_layer_prune_takes_the_same_fraction_of_each_layer():
    model = net()
    masks = magnitude_prune(model, full_masks(model), 0.2, "layer")
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert int((~m).sum()) == round(0.2 * m.numel())
        w = params[n].detach().abs()
        assert float(w[~m].max()) <= float(w[m].min())


def test_layer_fractions_prune_the_output_at_its_own_rate():
    model = net()
    masks = magnitude_prune(model, full_masks(model), 0.2, "global", {"out.weight": 0.1})
    assert int((~masks["out.weight"]).sum()) == round(0.1 * masks["out.weight"].numel())
    hidden = [masks["fc1.weight"], masks["fc2.weight"]]
    assert sum(int((~m).sum()) for m in hidden) == round(0.2 * sum(m.numel() for m in hidden))
    with pytest.raises(PhenomlabError):
        magnitude_prune(model, full_masks(model), 0.2, "global", {"fc1.bias": 0.1})


def test_iterated_pruning_is_nested_and_geometric():
    model = net()
    masks = full_masks(model)
    for r in range(1, 6):
        # perturb weights between rounds as training would: pruned weights must stay pruned anyway
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        new = magnitude_prune(model, masks, 0.2)
        assert all(bool((new[n] <= masks[n]).all()) for n in masks)
        masks = new
        assert abs((1 - sparsity(masks)) - 0.8**r) < 0.01
    ls = layer_sparsity(masks)
    assert set(ls) == set(masks) and all(0 <= v < 1 for v in ls.values())


def test_prune_rejects_bad_input():
    model = net()
    with pytest.raises(PhenomlabError):
        magnitude_prune(model, full_masks(model), 1.0)
    with pytest.raises(PhenomlabError):
        magnitude_prune(model, full_masks(model), 0.2, "channel")
    with pytest.raises(PhenomlabError):
        magnitude_prune(model, {"fc1.weight": torch.ones(3, 3, dtype=torch.bool)}, 0.2)
    with pytest.raises(PhenomlabError):
        magnitude_prune(model, {"ghost": torch.ones(3, dtype=torch.bool)}, 0.2)


def test_random_masks_keep_the_layer_counts():
    model = net()
    masks = full_masks(model)
    for _ in range(3):
        masks = magnitude_prune(model, masks, 0.3)
    r1 = random_masks(masks, torch.Generator().manual_seed(0))
    r2 = random_masks(masks, torch.Generator().manual_seed(0))
    for n in masks:
        assert int(r1[n].sum()) == int(masks[n].sum())
        assert r1[n].shape == masks[n].shape
        assert torch.equal(r1[n], r2[n])
    assert any(not torch.equal(r1[n], masks[n]) for n in masks)


@pytest.mark.parametrize("opt, momentum, wd", [("sgd", 0.9, 1e-2), ("adam", 0.0, 1e-2), ("adamw", 0.0, 0.1)])
def test_attached_masks_stay_applied_through_training(opt, momentum, wd):
    model = net()
    masks = full_masks(model)
    masks = magnitude_prune(model, masks, 0.5)
    before = state_copy(model)
    cfg = TrainConfig(
        steps=30, lr=0.05, optimizer=opt, momentum=momentum, weight_decay=wd, batch_size=16, eval_every=10
    )
    o = make_optimizer(model.parameters(), cfg)
    handle = attach_masks(model, masks, o)
    train(model, task(), cfg, optimizer=o)
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert float(params[n].detach()[~m].abs().max()) == 0.0
        assert not torch.equal(params[n].detach()[m], before[n][m])  # survivors did train
    handle.remove()
    assert handle.handles == []


def test_gradients_of_pruned_weights_are_zero_and_remove_detaches():
    model = net()
    masks = magnitude_prune(model, full_masks(model), 0.5)
    handle = attach_masks(model, masks)
    x, y = task()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert float(params[n].grad[~m].abs().max()) == 0.0
        assert float(params[n].grad[m].abs().max()) > 0.0
    handle.remove()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert float(params["fc1.weight"].grad[~masks["fc1.weight"]].abs().max()) > 0.0


def test_rewind_restores_the_saved_state_under_the_mask():
    model = net()
    init = state_copy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    masks = magnitude_prune(model, full_masks(model), 0.4)
    rewind(model, init, masks)
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.equal(params[n].detach(), init[n] * m)
    assert torch.equal(params["fc1.bias"].detach(), init["fc1.bias"])
    apply_masks(model, masks)  # idempotent
    assert torch.equal(params["out.weight"].detach(), init["out.weight"] * masks["out.weight"])
