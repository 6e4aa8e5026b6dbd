"""Cost of training k SmallCNNs one after another vs as one stacked network (representation-similarity's nets).

Run:  python benchmarks/stacked_cnn_cost.py [--widths 8,16,32,64] [--nets 8] [--steps 60]

Times ``steps`` Adam steps (forward, backward, step) of batch 128 on random MNIST-1D-shaped inputs and scales to
the preset's 1,500 steps, for three ways of training ``nets`` copies of ``SmallCNN(channels=(c,) * 4, hidden=2c)``:
``sequential`` (one net at a time, as the phenomenon does), ``grouped`` (the nets as one network of grouped
convolutions, ``groups=nets``, each member fed its own batch through its own input channel) and ``bmm`` (patches
unfolded along the signal and multiplied per member with ``torch.baddbmm``). Before timing, the grouped network
loaded with the members' weights is checked to compute each member's output (so the comparison is of equal work).
One thread unless ``--threads`` says otherwise; the load average is printed with the rows. Results:
docs/phenomena/representation-similarity.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

try:
    import phenomlab  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
import torch.nn.functional as F
from torch import nn

from phenomlab.models import SmallCNN

LENGTH, CLASSES, KERNEL, BATCH, PRESET_STEPS = 40, 10, 5, 128, 1500


class GroupedCNN(nn.Module):
    """``k`` SmallCNNs as one network: member ``m`` owns channel block ``m`` of every layer."""

    def __init__(self, k: int, c: int) -> None:
        super().__init__()
        self.k = k
        dims = [1] + [c] * 4
        self.convs = nn.ModuleList(
            nn.Conv1d(k * dims[i], k * dims[i + 1], KERNEL, stride=1 if i == 0 else 2, padding=KERNEL // 2, groups=k)
            for i in range(4)
        )
        self.fc = nn.Conv1d(k * c, k * 2 * c, 1, groups=k)
        self.out = nn.Conv1d(k * 2 * c, k * CLASSES, 1, groups=k)

    def load_members(self, nets: list[SmallCNN]) -> None:
        with torch.no_grad():
            for i, conv in enumerate(self.convs, 1):
                conv.weight.copy_(torch.cat([getattr(n, f"conv{i}").weight for n in nets]))
                conv.bias.copy_(torch.cat([getattr(n, f"conv{i}").bias for n in nets]))
            for mine, name in ((self.fc, "fc"), (self.out, "out")):
                mine.weight.copy_(torch.cat([getattr(n, name).weight for n in nets]).unsqueeze(-1))
                mine.bias.copy_(torch.cat([getattr(n, name).bias for n in nets]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, k, L] -> [B, k, classes]
        for conv in self.convs:
            x = F.relu(conv(x))
        x = x.mean(-1, keepdim=True)
        return self.out(F.relu(self.fc(x))).view(x.shape[0], self.k, CLASSES)


class UnfoldCNN(nn.Module):
    """``k`` SmallCNNs as batched matmuls: activations ``[k, B, L, C]``, each conv = unfold along L + baddbmm."""

    def __init__(self, k: int, c: int) -> None:
        super().__init__()
        dims = [1] + [c] * 4
        self.w = nn.ParameterList(nn.Parameter(torch.randn(k, KERNEL * dims[i], dims[i + 1]) * 0.1) for i in range(4))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(k, 1, dims[i + 1])) for i in range(4))
        self.fc_w, self.fc_b = nn.Parameter(torch.randn(k, c, 2 * c) * 0.1), nn.Parameter(torch.zeros(k, 1, 2 * c))
        self.out_w = nn.Parameter(torch.randn(k, 2 * c, CLASSES) * 0.1)
        self.out_b = nn.Parameter(torch.zeros(k, 1, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [k, B, L] -> [k, B, classes]
        k, b, _ = x.shape
        h = x.unsqueeze(-1)
        for i, (w, bias) in enumerate(zip(self.w, self.b, strict=True)):
            patches = F.pad(h, (0, 0, KERNEL // 2, KERNEL // 2)).unfold(2, KERNEL, 1 if i == 0 else 2)
            steps = patches.shape[2]
            h = F.relu(torch.baddbmm(bias, patches.reshape(k, b * steps, -1), w)).view(k, b, steps, -1)
        h = F.relu(torch.baddbmm(self.fc_b, h.mean(2), self.fc_w))
        return torch.baddbmm(self.out_b, h, self.out_w)


def seconds_per_preset(step, params, steps: int) -> float:
    opt = torch.optim.Adam(params, 1e-3)
    step(opt)  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step(opt)
    return (time.perf_counter() - t) / steps * PRESET_STEPS


def measure(c: int, k: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    nets = [SmallCNN(1, CLASSES, channels=(c,) * 4, hidden=2 * c) for _ in range(k)]
    x, y = torch.randn(k, BATCH, LENGTH), torch.randint(0, CLASSES, (k, BATCH))
    grouped = GroupedCNN(k, c)
    grouped.load_members(nets)
    with torch.no_grad():
        want = torch.stack([n(x[m]) for m, n in enumerate(nets)], 1)
        torch.testing.assert_close(grouped(x.transpose(0, 1)), want, rtol=1e-4, atol=1e-5)

    def sequential(opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        for m, n in enumerate(nets):
            F.cross_entropy(n(x[m]), y[m]).backward()
        opt.step()

    def stacked(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
        def one(opt: torch.optim.Optimizer) -> None:
            opt.zero_grad(set_to_none=True)
            # a sum of the members' mean losses: each member's gradient is its own net's
            loss = F.cross_entropy(net(inputs).reshape(-1, CLASSES), targets.reshape(-1), reduction="sum")
            loss.div(BATCH).backward()
            opt.step()

        return one

    unfold = UnfoldCNN(k, c)
    return {
        "sequential": seconds_per_preset(sequential, [p for n in nets for p in n.parameters()], steps),
        "grouped": seconds_per_preset(stacked(grouped, x.transpose(0, 1), y.t()), grouped.parameters(), steps),
        "bmm": seconds_per_preset(stacked(unfold, x, y), unfold.parameters(), steps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="8,16,32,64")
    ap.add_argument("--nets", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per variant (scaled to 1,500)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, {a.threads} thread(s), {a.nets} nets, seconds per 1,500 steps")
    print("channels  sequential  grouped  bmm")
    for c in (int(w) for w in a.widths.split(",")):
        r = measure(c, a.nets, a.steps)
        print(f"{c:8d}  {r['sequential']:10.0f}  {r['grouped']:7.0f}  {r['bmm']:4.0f}")


if __name__ == "__main__":
    main()
