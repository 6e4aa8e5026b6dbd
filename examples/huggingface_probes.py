"""Probe a Hugging Face transformer with phenomlab: features by module name, CKA between layers, the top Hessian
eigenvalue of the language-model loss and the empirical NTK on a few tokens.

The models are built from a config with random weights (nothing is downloaded). Run: ``python
examples/huggingface_probes.py`` (needs ``pip install transformers``). Hessian probes need double backward, which
PyTorch's fused attention kernels lack: build the model with ``attn_implementation="eager"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from phenomlab import probes


def tiny_gpt2(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=12, n_positions=8, n_embd=8, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0)
    cfg.attn_pdrop = 0.0
    return GPT2LMHeadModel._from_config(cfg, attn_implementation="eager").double()


def tiny_bert(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=12, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertModel._from_config(cfg, attn_implementation="eager").double()


def lm_loss(out, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of a causal LM's output (``out.logits`` is ``[batch, tokens, vocab]``)."""
    return F.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


class LastTokenLogits(nn.Module):
    """``ids -> logits of the last position``: the one-tensor function of the parameters the NTK is taken of."""

    def __init__(self, lm: nn.Module, n_logits: int = 4) -> None:
        super().__init__()
        self.lm, self.n_logits = lm, n_logits

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=ids).logits[:, -1, : self.n_logits]


def main() -> dict[str, object]:
    gpt2, bert = tiny_gpt2(), tiny_bert()
    ids = torch.randint(0, 12, (6, 8), generator=torch.Generator().manual_seed(1))
    # features by module name (TransformerLens-style names are the module tree's: transformer.h.0, encoder.layer.1)
    feats = probes.features(gpt2, {"input_ids": ids}, ["transformer.h.0", "transformer.h.1"])
    bert_feats = probes.features(bert, {"input_ids": ids}, ["encoder.layer.0", "encoder.layer.1"])
    out = {
        "cka_gpt2_h0_h1": probes.linear_cka(feats["transformer.h.0"], feats["transformer.h.1"]),
        "cka_bert_l0_l1": probes.linear_cka(bert_feats["encoder.layer.0"], bert_feats["encoder.layer.1"]),
        # (inputs, targets) with dict inputs: the loss function receives the model output and the targets
        "top_hessian_eigenvalue": probes.top_hessian_eigenvalue(gpt2, lm_loss, ({"input_ids": ids}, ids), tol=1e-8),
        "ntk": probes.empirical_ntk(LastTokenLogits(gpt2), ids[:3]),
    }
    for k, v in out.items():
        print(f"{k}: {v}")
    return out


if __name__ == "__main__":
    main()
