"""Probes on Hugging Face models (dict inputs, module names, ModelOutput outputs) equal the same quantities
computed with plain torch on the same weights (issue 17 item 2). Runs examples/huggingface_probes.py."""

import runpy
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

pytest.importorskip("transformers")

EXAMPLE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "huggingface_probes.py"))


@pytest.fixture(scope="module")
def result():
    return EXAMPLE["main"]()


def _ids():
    return torch.randint(0, 12, (6, 8), generator=torch.Generator().manual_seed(1))


def _cka(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    return float((y.T @ x).norm() ** 2 / ((x.T @ x).norm() * (y.T @ y).norm()))


def test_features_and_cka_equal_plain_torch(result):
    gpt2, ids = EXAMPLE["tiny_gpt2"](), _ids()
    seen = []  # block 1's own output by a plain hook: the last hidden state has ln_f applied
    hook = gpt2.transformer.h[1].register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        h = gpt2(input_ids=ids, output_hidden_states=True).hidden_states
    hook.remove()
    h1 = seen[0]  # a tuple's first entry before transformers 5, a tensor since
    assert result["cka_gpt2_h0_h1"] == pytest.approx(_cka(h[1].flatten(1), h1.flatten(1)), rel=1e-12)
    bert = EXAMPLE["tiny_bert"]()
    with torch.no_grad():
        hb = bert(input_ids=ids, output_hidden_states=True).hidden_states
    assert result["cka_bert_l0_l1"] == pytest.approx(_cka(hb[1].flatten(1), hb[2].flatten(1)), rel=1e-12)


def _flat_function(model, fn):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().flatten() for _, p in model.named_parameters()])

    def f(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            parts[n] = flat[i : i + s.numel()].view(s)
            i += s.numel()
        return fn(lambda **kw: functional_call(model, parts, (), kw))

    return f, theta


def test_top_hessian_eigenvalue_equals_the_dense_hessian(result):
    gpt2, ids = EXAMPLE["tiny_gpt2"](), _ids()
    gpt2.eval()
    f, theta = _flat_function(gpt2, lambda call: EXAMPLE["lm_loss"](call(input_ids=ids), ids))
    dense = torch.autograd.functional.hessian(f, theta)  # every entry by double backward, ~1,300 parameters
    top = float(torch.linalg.eigvalsh((dense + dense.T) / 2)[-1])
    assert result["top_hessian_eigenvalue"] == pytest.approx(top, rel=1e-8)


def test_ntk_equals_the_dense_jacobian(result):
    gpt2, ids = EXAMPLE["tiny_gpt2"](), _ids()[:3]
    gpt2.eval()
    f, theta = _flat_function(gpt2, lambda call: call(input_ids=ids).logits[:, -1, :4].flatten())
    jac = torch.autograd.functional.jacobian(f, theta).view(3, 4, -1)
    ref = torch.einsum("iop,jop->ij", jac, jac)
    torch.testing.assert_close(result["ntk"], ref, rtol=1e-10, atol=1e-10)


def test_fused_attention_gives_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    from phenomlab import probes
    from phenomlab.errors import PhenomlabError

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=12, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    model = GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa")
    ids = _ids()
    with pytest.raises(PhenomlabError, match="attn_implementation='eager'"):
        probes.top_hessian_eigenvalue(model, EXAMPLE["lm_loss"], ({"input_ids": ids}, ids))
