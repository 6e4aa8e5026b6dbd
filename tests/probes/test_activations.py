import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from phenomlab.errors import PhenomlabError
from phenomlab.probes.activations import features, module_names


def seq():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.Dropout(0.5))


def test_sequential_layers_flattened_and_exact():
    m = seq()
    x = torch.randn(20, 5)
    f = features(m, x, ["0", "2"])
    assert list(f) == ["0", "2"]
    with torch.no_grad():
        assert torch.equal(f["0"], m[0](x))
        assert torch.equal(f["2"], m[2](m[1](m[0](x))))
    assert not f["0"].requires_grad
    assert features(m, x, "2")["2"].shape == (20, 3)


def test_batches_and_dataloader_match_full_pass():
    m = seq()
    x = torch.randn(23, 5)
    full = features(m, x, ["1"])["1"]
    assert torch.allclose(features(m, x, ["1"], batch_size=4)["1"], full, atol=1e-6)
    loader = DataLoader(TensorDataset(x, torch.zeros(23)), batch_size=5)
    assert torch.allclose(features(m, loader, ["1"])["1"], full, atol=1e-6)


def test_eval_mode_during_and_modes_restored_after():
    m = seq()
    m.train()
    m[0].eval()  # a deliberately mixed state must survive
    x = torch.randn(50, 5)
    a = features(m, x, ["3"])["3"]
    b = features(m, x, ["3"])["3"]
    assert torch.equal(a, b)  # dropout off: eval mode inside
    assert m.training and m[3].training and not m[0].training


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.fc1 = nn.Linear(4 * 6, 8)

    def forward(self, x):
        return self.fc1(torch.relu(self.conv(x)).flatten(1))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = Encoder()
        self.rnn = nn.GRU(8, 3, batch_first=True)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        h = self.enc(x)
        out, _ = self.rnn(h[:, None, :])
        return self.head(out[:, -1])


def test_custom_class_nested_names_conv_and_tuple_outputs():
    torch.manual_seed(0)
    m = Model()
    x = torch.randn(6, 2, 8)
    f = features(m, x, ["enc.conv", "enc.fc1", "rnn", ""])
    assert f["enc.conv"].shape == (6, 4 * 6)  # conv output flattened
    assert f["enc.fc1"].shape == (6, 8)
    assert f["rnn"].shape == (6, 3)  # first tensor of the (output, h_n) tuple
    with torch.no_grad():
        assert torch.allclose(f[""], m(x))
    assert module_names(m) == ["enc", "enc.conv", "enc.fc1", "rnn", "head"]


def test_unknown_layer_lists_existing_names():
    m = seq()
    with pytest.raises(ValueError) as err:
        features(m, torch.randn(2, 5), ["0", "fc9"])
    msg = str(err.value)
    assert "fc9" in msg
    for name in ["'0'", "'1'", "'2'", "'3'"]:
        assert name in msg
    with pytest.raises(ValueError, match="empty"):
        features(m, torch.randn(2, 5), [])


def test_hooks_removed_after_error():
    m = seq()
    with pytest.raises(RuntimeError):
        features(m, torch.randn(2, 4), ["0"])  # wrong input width
    assert not m[0]._forward_hooks


@pytest.mark.parametrize(
    "inputs",
    [torch.empty(0, 5), [], DataLoader(TensorDataset(torch.empty(0, 5)), batch_size=4), {"x": torch.empty(0, 5)}],
    ids=["tensor", "list", "loader", "mapping"],
)
@pytest.mark.parametrize("batch_size", [None, 2])
def test_empty_inputs_raise_one_line_error(inputs, batch_size):
    with pytest.raises(PhenomlabError, match="no samples") as err:
        features(seq(), inputs, ["0"], batch_size=batch_size)
    assert "\n" not in str(err.value)


class KwargsNet(nn.Module):
    """A forward that takes keyword tensors, as Hugging Face models do."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.fc = nn.Linear(4 + 3, 2)

    def forward(self, *, input_ids, x):
        return self.fc(torch.cat([self.emb(input_ids).mean(1), x], dim=1))


def test_mapping_inputs_are_keyword_arguments():
    torch.manual_seed(0)
    m = KwargsNet()
    batch = {"input_ids": torch.randint(0, 11, (9, 5)), "x": torch.randn(9, 3)}
    with torch.no_grad():
        ref = m.emb(batch["input_ids"])
    full = features(m, batch, ["emb", "fc"])
    assert torch.equal(full["emb"], ref.reshape(9, -1))
    for bs in (2, 4):
        chunked = features(m, batch, ["emb", "fc"], batch_size=bs)
        assert all(torch.allclose(chunked[k], full[k], atol=1e-6) for k in full)
    loader = [(batch, torch.zeros(9)), ({k: v[:3] for k, v in batch.items()}, torch.zeros(3))]
    assert features(m, loader, "fc")["fc"].shape == (12, 2)


def test_dtype_mismatch_is_one_line_error_naming_both_dtypes():
    from phenomlab.probes import empirical_ntk, top_hessian_eigenvalue

    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))  # float32
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(PhenomlabError, match="inputs are torch.float64 but the model's parameters are torch.float32"):
        features(net, x, "1")
    with pytest.raises(PhenomlabError, match="torch.float64 but the model's parameters are torch.float32"):
        empirical_ntk(net, x)
    with pytest.raises(PhenomlabError, match="torch.float64 but the model's parameters are torch.float32"):
        top_hessian_eigenvalue(net, nn.MSELoss(), (x, torch.zeros(5, 2, dtype=torch.float64)))
    # a model that casts its inputs itself is not rejected
    cast = nn.Sequential(nn.Identity(), nn.Linear(3, 2))
    cast[0].forward = lambda t: t.float()  # type: ignore[method-assign]
    assert features(cast, x, "1")["1"].dtype == torch.float32


def test_shared_module_calls_sit_side_by_side_whatever_the_batching():
    torch.manual_seed(0)
    lin = nn.Linear(6, 6)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    x = torch.randn(24, 6)
    first = lin(x)
    second = lin(torch.relu(first))
    want = torch.cat([first, second], dim=1).detach()
    for batch_size in (None, 5):
        got = features(model, x, "0", batch_size=batch_size)["0"]
        assert got.shape == (24, 12)
        torch.testing.assert_close(got, want)


def test_output_without_one_row_per_sample_is_rejected():
    attn = nn.MultiheadAttention(4, 1)  # sequence first: outputs [L, N, E]

    class Wrap(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = attn

        def forward(self, x):  # batch-first input, sequence-first attention inside
            s = x.transpose(0, 1)
            return self.attn(s, s, s)[0].transpose(0, 1)

    with pytest.raises(PhenomlabError, match="returned 5 rows for a batch of 3 samples"):
        features(Wrap(), torch.randn(3, 5, 4), "attn")
    mlp = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
    with pytest.raises(PhenomlabError, match="batch first"):
        features(mlp, torch.randn(6), "0")
