import pytest
import torch

from phenomlab.errors import ConfigError
from phenomlab.phenomena import Result, build_config, information_plane
from phenomlab.probes.information import quantized_mutual_information

RISE_FALL = [4.0, 9.0, 7.0, 6.0]  # peak 9, end 6: end/peak 0.67 (compression)
RISE = [4.0, 6.0, 7.5, 8.0]  # end = peak: 1.0 (none)
FALL_ONLY = [9.0, 8.0, 7.0, 6.0]  # end/peak 0.67 too, but no fitting phase: the peak is the first step
ITY = [0.1, 1.0, 1.0, 1.0]


def traj(binned, exact, ity=ITY):
    # 5 hidden layers; the checks look at the deepest 2 (the same series for both)
    return {
        "steps": [0, 50, 100, 150],
        "binned_ixt": [RISE] * 3 + [binned] * 2,
        "exact_ixt": [RISE] * 3 + [exact] * 2,
        "binned_ity": [ITY] * 4 + [ity],
        "exact_ity": [ITY] * 4 + [ity],
    }


def make_result(tanh, relu):
    cfg = build_config(information_plane.Config, information_plane.PRESETS)
    data = {"h_y": 1.0, "n_deep": 2, "n_inputs": 4096, "tanh": tanh, "relu": relu}
    return Result(information_plane.ID, cfg.to_dict(), 0, data)


def _check(v, name):
    return next(c for c in v.checks if c.name == name)


def failed(v):
    return [c.name for c in v.checks if not c.passed]


def test_present_passes_every_check():
    v = information_plane.signature(make_result(traj(RISE_FALL, RISE_FALL), traj(RISE, RISE)))
    assert v.passed, str(v)
    assert "estimators agree" in v.summary


def test_tanh_binned_check_fails_without_compression():
    v = information_plane.signature(make_result(traj(RISE, RISE_FALL), traj(RISE, RISE)))
    assert failed(v) == ["tanh_binned_end/peak"]
    assert "estimator-dependent for tanh" in v.summary


def test_tanh_exact_check_fails_when_the_exact_mi_does_not_compress():
    v = information_plane.signature(make_result(traj(RISE_FALL, RISE), traj(RISE, RISE)))
    assert failed(v) == ["tanh_exact_end/peak"]
    assert "estimator-dependent for tanh" in v.summary


def test_tanh_check_needs_both_deep_layers_to_compress():
    t = traj(RISE_FALL, RISE_FALL)
    t["binned_ixt"][-2] = RISE  # only the last layer compresses
    v = information_plane.signature(make_result(t, traj(RISE, RISE)))
    assert failed(v) == ["tanh_binned_end/peak"]


def test_tanh_exact_check_needs_both_deep_layers_to_compress():
    t = traj(RISE_FALL, RISE_FALL)
    t["exact_ixt"][-1] = RISE  # only the second-deepest layer compresses under the exact estimator
    v = information_plane.signature(make_result(t, traj(RISE, RISE)))
    assert failed(v) == ["tanh_exact_end/peak"]


@pytest.mark.parametrize("est", ["binned", "exact"])
def test_tanh_fitting_phase_check_fails_when_information_only_falls(est):
    t = traj(RISE_FALL, RISE_FALL)
    t[f"{est}_ixt"][-1] = FALL_ONLY  # compresses from step 0 on: end/peak passes, there is no fitting phase
    v = information_plane.signature(make_result(t, traj(RISE, RISE)))
    assert failed(v) == [f"tanh_{est}_peak/start"]
    assert _check(v, f"tanh_{est}_peak/start").value == pytest.approx(1.0)


def test_tanh_fitting_phase_check_reads_the_smaller_rise_of_the_deep_layers():
    t = traj(RISE_FALL, RISE_FALL)
    t["binned_ixt"][-2] = [8.8, 9.0, 7.0, 6.0]  # rises by 2.3% only
    v = information_plane.signature(make_result(t, traj(RISE, RISE)))
    assert failed(v) == ["tanh_binned_peak/start"]
    assert _check(v, "tanh_binned_peak/start").value == pytest.approx(9.0 / 8.8)


def test_relu_control_fails_when_one_deep_layer_compresses():
    r = traj(RISE, RISE)
    r["binned_ixt"][-1] = RISE_FALL  # the other deep ReLU layer keeps its information: the smaller ratio decides
    v = information_plane.signature(make_result(traj(RISE_FALL, RISE_FALL), r))
    assert failed(v) == ["control_relu_binned_end/peak"]
    assert _check(v, "control_relu_binned_end/peak").value == pytest.approx(6.0 / 9.0)


def test_relu_binned_control_fails_when_relu_compresses_too():
    v = information_plane.signature(make_result(traj(RISE_FALL, RISE_FALL), traj(RISE_FALL, RISE)))
    assert failed(v) == ["control_relu_binned_end/peak"]
    assert "estimator-dependent for relu" in v.summary


def test_relu_exact_compression_is_reported_as_estimator_dependent_not_checked():
    # the design's control is ReLU under the same binning; the exact ReLU ratio is reported, not a check
    v = information_plane.signature(make_result(traj(RISE_FALL, RISE_FALL), traj(RISE, RISE_FALL)))
    assert v.passed and "estimator-dependent for relu" in v.summary
    assert "ReLU exact end/peak (reported, not checked) 0.667" in v.summary
    assert not any("relu_exact" in c.name for c in v.checks)


def test_fit_check_fails_when_a_net_does_not_learn():
    v = information_plane.signature(make_result(traj(RISE_FALL, RISE_FALL), traj(RISE, RISE, ity=[0.1, 0.2, 0.3, 0.5])))
    assert failed(v) == ["fit_I(T;Y)/H(Y)"]
    assert "relu did not fit the labels" in v.summary


def test_dead_layer_gives_no_ratio_and_fails():
    v = information_plane.signature(make_result(traj(RISE_FALL, RISE_FALL), traj([0.0] * 4, RISE)))
    assert _check(v, "control_relu_binned_end/peak").value is None
    assert failed(v) == ["control_relu_binned_end/peak"]


def test_task_is_symmetric_and_balanced():
    x, y = information_plane.symmetric_12bit_inputs()
    assert x.shape == (4096, 12) and int(y.sum()) == 2036
    v = information_plane._icosahedron()
    # every vertex has exactly 5 nearest neighbours (cos = 1/sqrt 5): the 12 points are an icosahedron
    g = v @ v.T
    assert ((g - 5**-0.5).abs() < 1e-9).sum(1).tolist() == [5] * 12
    # the label is invariant under a symmetry of the icosahedron: the point reflection v -> -v
    # permutes the vertices, and |sum x_i v_i|^2 is unchanged by it
    perm = [int((v + v[i]).norm(dim=1).argmin()) for i in range(12)]
    assert sorted(perm) == list(range(12))
    idx = {tuple(r): k for k, r in enumerate(x.long().tolist())}
    permuted = x[:, perm]
    assert all(y[idx[tuple(r)]] == y[k] for k, r in enumerate(permuted.long().tolist()))
    ds = information_plane.symmetric_12bit_task(0.8, seed=3)
    assert ds.n_train == 3277 and ds.n_test == 819


def test_quantized_twin_codes_give_exact_entropy():
    torch.manual_seed(0)
    net = information_plane.InfoNet(12, (4, 3), 2, "tanh")
    x, y = information_plane.symmetric_12bit_inputs()
    codes, logits = net.quantized_forward(x, 8, [(-1.0, 1.0)] * 2)
    assert all(c.dtype == torch.long and int(c.min()) >= 0 and int(c.max()) <= 255 for c in codes)
    # the twin with 16 bits reproduces the float net's logits closely
    _, fine = net.quantized_forward(x, 16, [(-1.0, 1.0)] * 2)
    assert torch.allclose(fine, net(x), atol=1e-3)
    # with 1 bit per unit the last layer has at most 2^3 symbols: I(X;T) <= 3 bits
    codes1, _ = net.quantized_forward(x, 1, [(-1.0, 1.0)] * 2)
    assert quantized_mutual_information(codes1[-1], y)[0] <= 3.0 + 1e-9


def test_szt_init_is_the_authors_truncated_normal_with_zero_biases():
    torch.manual_seed(0)
    net = information_plane.InfoNet(400, (300, 3), 2, "tanh", init="szt")
    for layer in net.layers:
        std, w = layer.in_features**-0.5, layer.weight.detach()
        assert torch.all(layer.bias == 0)
        assert float(w.abs().max()) <= 2 * std
        # a normal cut at +-2 std keeps 0.774 of its variance
        if w.numel() > 1000:
            assert float(w.std()) == pytest.approx(0.774**0.5 * std, rel=0.02)
    # the default is nn.Linear's own initialisation, draw for draw
    torch.manual_seed(1)
    default = information_plane.InfoNet(12, (4, 3), 2, "relu")
    torch.manual_seed(1)
    linears = [torch.nn.Linear(a, b) for a, b in ((12, 4), (4, 3), (3, 2))]
    for layer, ref in zip(default.layers, linears, strict=True):
        assert torch.equal(layer.weight, ref.weight) and torch.equal(layer.bias, ref.bias)


@pytest.mark.parametrize("over", [{"n_deep": 6}, {"n_bits": 0}, {"n_bins": 1}, {"train_fraction": 1.0}, {"init": "he"}])
def test_bad_config(over):
    with pytest.raises(ConfigError):
        build_config(information_plane.Config, information_plane.PRESETS, "quick", over)


def test_reduced_run_end_to_end(smoke):
    store, r = smoke("information-plane")
    assert {c.name for c in r.verdict.checks} == {
        "tanh_binned_end/peak",
        "tanh_exact_end/peak",
        "tanh_binned_peak/start",
        "tanh_exact_peak/start",
        "control_relu_binned_end/peak",
        "fit_I(T;Y)/H(Y)",
    }
    for act in ("tanh", "relu"):
        t = r.data[act]
        assert len(t["steps"]) == len(t["binned_ixt"][0]) == len(t["exact_ixt"][-1])
        assert all(0.0 <= v <= 12.0 + 1e-9 for layer in t["exact_ixt"] for v in layer)
    assert all(p.endswith(".png") for p in r.figures)
