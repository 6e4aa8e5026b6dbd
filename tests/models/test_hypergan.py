import pytest
import torch
import torch.nn.functional as F

from phenomlab.errors import PhenomlabError
from phenomlab.models.hypergan import (
    HyperSinGAN,
    batched_conv2d,
    conv_stack_shapes,
    primary_module,
    unflatten_stack,
)


def test_batched_conv_equals_one_convolution_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 2, 6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, 2, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, 5, generator=g, dtype=torch.float64)
    y = batched_conv2d(x, w, b)
    assert y.shape == (3, 4, 5, 6, 6)
    for i in range(4):
        ref = F.conv2d(x[:, i], w[i], b[i], padding=1)
        torch.testing.assert_close(y[:, i], ref, rtol=0, atol=1e-12)
    # one output pixel by hand: sum over channels and the 3x3 window (zero padding at the border)
    xp = F.pad(x[1, 2], (1, 1, 1, 1))
    hand = (xp[:, 0:3, 3:6] * w[2, 4]).sum() + b[2, 4]
    torch.testing.assert_close(y[1, 2, 4, 0, 3], hand, rtol=0, atol=1e-12)
    with pytest.raises(PhenomlabError):
        batched_conv2d(x, w[:3], b[:3])


def _model():
    torch.manual_seed(0)
    return HyperSinGAN(channels=1, size=8, n_scales=2, width=4, layers=3, embed_dim=5, enc_width=6).double()


def test_emitted_generator_equals_plain_module_per_image():
    model = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    sigmas = [1.0, 0.3]
    noises = [torch.randn(2, 3, 1, s, s, generator=g, dtype=torch.float64) for s in model.sizes]
    theta = model.emit(model.embed(x, "g"), "g")
    outs = model.generate(theta, noises, sigmas)
    for i in range(3):
        prev = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
        for s in range(2):
            net = primary_module([(w[i], b[i]) for w, b in theta[s]])
            if s:
                prev = F.interpolate(prev, size=model.sizes[s], mode="bilinear")
            prev = prev + torch.tanh(net(prev + sigmas[s] * noises[s][:, i]))
            torch.testing.assert_close(outs[s][:, i], prev, rtol=0, atol=1e-10)


def test_emitted_critic_equals_plain_module_per_image():
    model = _model()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 1, 8, 8, generator=g, dtype=torch.float64)
    theta = model.emit(model.embed(x, "d"), "d")
    inp = torch.randn(2, 4, 1, 8, 8, generator=g, dtype=torch.float64)
    scores = model.discriminate(theta, inp, 1)
    assert scores.shape == (2, 4, 1, 8, 8)
    for i in range(4):
        net = primary_module([(w[i], b[i]) for w, b in theta[1]])
        torch.testing.assert_close(scores[:, i], net(inp[:, i]), rtol=0, atol=1e-10)


def test_emission_is_affine_in_the_embedding_and_images_differ():
    model = _model()
    g = torch.Generator().manual_seed(3)
    e = torch.randn(2, 5, generator=g, dtype=torch.float64)
    a = 0.3
    mixed = model.emit(((1 - a) * e[0] + a * e[1])[None], "g")
    ends = model.emit(e, "g")
    for s in range(2):
        for (wm, bm), (w, b) in zip(mixed[s], ends[s], strict=True):
            torch.testing.assert_close(wm[0], (1 - a) * w[0] + a * w[1], rtol=0, atol=1e-12)
            torch.testing.assert_close(bm[0], (1 - a) * b[0] + a * b[1], rtol=0, atol=1e-12)
    assert not torch.allclose(ends[0][0][0][0], ends[0][0][0][1])


def test_shapes_and_parameter_count():
    shapes = conv_stack_shapes(1, 4, 1, 3)
    assert shapes == [(4, 1, 3), (4, 4, 3), (1, 4, 3)]
    flat = torch.arange(2 * 225, dtype=torch.float64).reshape(2, 225)
    params = unflatten_stack(flat, shapes)
    net = primary_module([(w[1], b[1]) for w, b in params])
    assert sum(p.numel() for p in net.parameters()) == 225 == 4 * 9 + 4 + 4 * 4 * 9 + 4 + 4 * 9 + 1
    # the flat vector is laid out layer by layer: weight then bias
    assert float(params[0][0][1].flatten()[0]) == 225.0 and float(params[0][1][1][0]) == 225.0 + 36
    with pytest.raises(PhenomlabError):
        unflatten_stack(torch.zeros(1, 224), shapes)
    with pytest.raises(PhenomlabError):
        conv_stack_shapes(1, 4, 1, 0)
    with pytest.raises(PhenomlabError):
        HyperSinGAN(size=10, n_scales=3)
