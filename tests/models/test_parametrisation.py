"""Parametrisations (SP, NTK, muP): exact against hand computations and against the ``mup`` package.

``mup`` (Microsoft's reference implementation) is a test-only dependency installed without its own
dependencies (``pip install --no-deps mup==1.0.0``: its requirements pull torchvision and a CUDA torch); the
cross-check is skipped where it is absent.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from phenomlab.errors import PhenomlabError
from phenomlab.models import MLP, Transformer1L
from phenomlab.models.parametrisation import (
    make_optimizer,
    param_groups,
    parametrisation_rules,
    parametrise,
    width_multipliers,
)
from phenomlab.train import TrainConfig, train


def _mlp(width: int, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(8, 3, width=width, depth=2).double()


def _lr_by_param(opt: torch.optim.Optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


def test_width_multipliers_compare_shapes() -> None:
    m = width_multipliers(_mlp(64), _mlp(16))
    assert m["fc1.weight"] == (4.0, 1.0)
    assert m["fc2.weight"] == (4.0, 4.0)
    assert m["out.weight"] == (1.0, 4.0)
    assert m["out.bias"] == (1.0,)


def test_sp_changes_nothing() -> None:
    model, ref = _mlp(32), _mlp(32)
    parametrise(model, "sp")
    x = torch.randn(5, 8, dtype=torch.float64)
    assert torch.equal(model(x), ref(x))
    assert param_groups(model, "adam", 0.1) == [{"params": list(model.parameters()), "lr": 0.1, "weight_decay": 0.0}]


def test_ntk_same_function_at_init_and_scaled_gradients() -> None:
    model, ref = _mlp(32), _mlp(32)
    parametrise(model, "ntk")
    x = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-13, atol=1e-13)
    stored = model.fc2.parametrizations.weight.original
    # stored weights are the SP weights times sqrt(fan_in) (unit scale), multiplied back in the forward
    torch.testing.assert_close(stored, ref.fc2.weight * math.sqrt(32), rtol=1e-14, atol=0)
    model(x).sum().backward()
    ref(x).sum().backward()
    # d loss / d stored = (d loss / d W) / sqrt(fan_in): the NTK parametrisation's 1/width step per entry
    torch.testing.assert_close(stored.grad, ref.fc2.weight.grad / math.sqrt(32), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(model.fc2.bias.grad, ref.fc2.bias.grad, rtol=1e-12, atol=1e-15)


def test_mup_equals_sp_at_base_width() -> None:
    model, ref = _mlp(16), _mlp(16)
    parametrise(model, "mup", base=_mlp(16, seed=1))
    x = torch.randn(5, 8, dtype=torch.float64)
    assert torch.equal(model(x), ref(x))
    assert all(g["lr"] == 0.1 for g in param_groups(model, "sgd", 0.1))


def test_mup_rules_by_hand() -> None:
    rules = parametrisation_rules(_mlp(64), "mup", base=_mlp(16))
    m = 4.0
    assert (rules["fc1.weight"].lr_scale("adam"), rules["fc1.weight"].lr_scale("sgd")) == (1.0, m)
    assert (rules["fc2.weight"].lr_scale("adam"), rules["fc2.weight"].lr_scale("sgd")) == (1 / m, 1.0)
    assert rules["fc2.weight"].wd_scale("adamw") == m
    assert rules["fc2.bias"].init_scale == math.sqrt(m)
    assert (rules["out.weight"].multiplier, rules["out.weight"].init_scale) == (1 / m, math.sqrt(m))
    assert (rules["out.weight"].lr_scale("adam"), rules["out.weight"].lr_scale("sgd")) == (1.0, m)
    assert (rules["out.bias"].lr_scale("sgd"), rules["out.bias"].init_scale) == (1.0, math.sqrt(m))


def test_train_applies_the_groups() -> None:
    """One full-batch SGD step through ``train()`` moves each stored parameter by lr * lr_scale * grad."""
    model = _mlp(64)
    parametrise(model, "mup", base=_mlp(16))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(20, 8, dtype=torch.float64), torch.randint(0, 3, (20,))
    probe = copy.deepcopy(model)
    nn.functional.cross_entropy(probe(x), y).backward()
    grads = {n: p.grad for n, p in probe.named_parameters()}
    train(model, (x, y), TrainConfig(steps=1, lr=0.1, optimizer="sgd", eval_every=1))
    rules = model.parametrisation.rules
    for n, p in model.named_parameters():
        plain = n.replace(".parametrizations.", ".").removesuffix(".original")
        expected = before[n] - 0.1 * rules[plain].lr_scale("sgd") * grads[n]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)


def test_errors() -> None:
    with pytest.raises(PhenomlabError, match="unknown parametrisation"):
        parametrise(_mlp(16), "xyz")
    with pytest.raises(PhenomlabError, match="base model"):
        parametrise(_mlp(16), "mup")
    with pytest.raises(PhenomlabError, match="base must be the same model built at the base width"):
        parametrise(_mlp(16), "mup", base=8)  # a width, not a model
    model = _mlp(16)
    parametrise(model, "ntk")
    with pytest.raises(PhenomlabError, match="already parametrised"):
        parametrise(model, "ntk")
    with pytest.raises(PhenomlabError, match="different parameters"):
        parametrise(_mlp(16), "mup", base=MLP(8, 3, width=16, depth=3))
    with pytest.raises(PhenomlabError, match="unknown optimizer"):
        param_groups(model, "lbfgs", 0.1)


# --- cross-check against Microsoft's mup package ---------------------------------------------------------


def _with_mu_readout(model: nn.Module, mup: object) -> nn.Module:
    twin = copy.deepcopy(model)
    old = twin.out
    readout = mup.MuReadout(old.in_features, old.out_features, bias=old.bias is not None).to(old.weight.dtype)
    readout.load_state_dict(old.state_dict())
    twin.out = readout
    return twin


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_mup_matches_the_mup_package(arch: str) -> None:
    mup = pytest.importorskip("mup")

    def build(width: int, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        if arch == "mlp":
            return MLP(8, 3, width=width, depth=2).double()
        return Transformer1L(11, 5, seq_len=3, d_model=width, n_heads=2, d_mlp=2 * width).double()

    width, base_width = 64, 16
    mine, base = build(width), build(base_width, seed=1)
    theirs = _with_mu_readout(mine, mup)
    mup.set_base_shapes(theirs, _with_mu_readout(base, mup))
    parametrise(mine, "mup", base=base)

    # init scales: the same stored tensors after both rescalings
    stored = {n.replace(".parametrizations.", ".").removesuffix(".original"): p for n, p in mine.named_parameters()}
    for n, p in theirs.named_parameters():
        torch.testing.assert_close(stored[n], p, rtol=1e-15, atol=0, msg=n)

    # per-parameter learning rates and weight decays of MuAdam(W) and MuSGD
    by_name = dict(theirs.named_parameters())
    mine_by_name = {
        n.replace(".parametrizations.", ".").removesuffix(".original"): p for n, p in mine.named_parameters()
    }
    for name, ours_opt, their_opt in (
        (
            "adamw",
            make_optimizer(mine, "adamw", 0.01, 0.1),
            mup.MuAdamW(theirs.parameters(), lr=0.01, weight_decay=0.1),
        ),
        ("sgd", make_optimizer(mine, "sgd", 0.5, 0.1), mup.MuSGD(theirs.parameters(), lr=0.5, weight_decay=0.1)),
    ):
        ours, ref = _lr_by_param(ours_opt), _lr_by_param(their_opt)
        for n, p in by_name.items():
            assert ours[id(mine_by_name[n])] == pytest.approx(ref[id(p)], rel=1e-15), (name, n)

    if arch == "mlp":  # the readout's 1/m multiplier: the same function (mup has no attention rule to compare)
        x = torch.randn(6, 8, dtype=torch.float64)
        torch.testing.assert_close(mine(x), theirs(x), rtol=1e-13, atol=1e-15)


def test_mup_attention_logits_scale_as_one_over_d_head() -> None:
    """The query rows carry sqrt(d_head_base / d_head): logits q.k / sqrt(d_head) become q.k sqrt(d0) / d_head."""
    torch.manual_seed(0)
    model = Transformer1L(11, 5, seq_len=3, d_model=64, n_heads=2, d_mlp=32).double()
    ref = copy.deepcopy(model)
    parametrise(model, "mup", base=Transformer1L(11, 5, seq_len=3, d_model=16, n_heads=2, d_mlp=32).double())
    effective = model.attn.in_proj_weight
    torch.testing.assert_close(effective[:64], ref.attn.in_proj_weight[:64] * 0.5, rtol=1e-15, atol=0)
    torch.testing.assert_close(effective[64:], ref.attn.in_proj_weight[64:], rtol=1e-15, atol=0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("scheme", ["ntk", "mup"])
def test_folded_multipliers_train_identically(scheme: str, optimizer: str) -> None:
    """W = c w: the folded parametrisation follows the same trajectory of effective weights (5 steps)."""
    x, y = torch.randn(20, 8, dtype=torch.float64), torch.randint(0, 3, (20,))
    runs = []
    for fold in (None, optimizer):
        model = _mlp(64)
        parametrise(model, scheme, base=_mlp(16), fold_for=fold)
        kw = {"eps": 1e-30} if optimizer != "sgd" else {"momentum": 0.5}
        opt = make_optimizer(model, optimizer, 1e-2, weight_decay=1e-3, **kw)
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        runs.append(model)
    if scheme == "mup":
        assert not any(isinstance(m, nn.Linear) and parametrize.is_parametrized(m) for m in runs[1].modules())
    for (n, a), (_, b) in zip(_effective(runs[0]), _effective(runs[1]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=n)


def _effective(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [
        (n, getattr(m, p)) for n, m in model.named_modules() for p in ("weight", "bias") if isinstance(m, nn.Linear)
    ]


def test_folded_rules_refuse_another_optimizer_family() -> None:
    model = _mlp(64)
    parametrise(model, "mup", base=_mlp(16), fold_for="adam")
    assert model.parametrisation.folded_for == "adam"
    # the readout's SGD rate would be 16x off: folded for Adam its multiplier went into lr * c, SGD needs c^2
    with pytest.raises(PhenomlabError, match="folded for 'adam'"):
        param_groups(model, "sgd", 1e-2)
    with pytest.raises(PhenomlabError, match="folded for 'adam'"):
        param_groups(model, "adamw", 1e-2, weight_decay=1e-3)  # the decays fold differently
    assert param_groups(model, "adamw", 1e-2)  # without weight decay Adam and AdamW fold alike


def test_ntk_scales_every_separate_attention_projection() -> None:
    # kdim != embed_dim: PyTorch keeps separate q/k/v projection weights; all three are linear maps
    att = nn.MultiheadAttention(8, 2, kdim=6, vdim=5)
    rules = parametrisation_rules(att, "ntk")
    for name, fan_in in (("q_proj_weight", 8), ("k_proj_weight", 6), ("v_proj_weight", 5)):
        assert rules[name].multiplier == pytest.approx(1 / math.sqrt(fan_in)), name
