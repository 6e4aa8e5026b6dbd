# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # phenomlab in ten minutes
#
# This tutorial is a jupytext script: open it as a notebook (`jupytext --to notebook docs/tutorial/tutorial.py`)
# or run it as it is (`python docs/tutorial/tutorial.py`). The test suite executes it
# (`tests/test_tutorial.py`), so every cell below works with the installed version.
#
# 1. reproduce a phenomenon and read its verdict;
# 2. measure your own model with the probes;
# 3. sweep a hyper-parameter across seeds and compare.

# %%
import os
import tempfile

import phenomlab
from phenomlab import data, models, probes
from phenomlab.train import TrainConfig, train

# every run is stored (config, metrics, verdict, figures) and read back when asked again
STORE = os.environ.get("PHENOMLAB_TUTORIAL_STORE") or tempfile.mkdtemp(prefix="phenomlab-tutorial-")

# %% [markdown]
# ## 1. Reproduce grokking
# Power et al. (2022): on modular addition a network fits its training set long before it generalises, and weight
# decay makes it generalise at all. A small modulus (p = 47) keeps this to seconds; the `quick` preset (p = 97) takes
# about half a minute. The verdict lists each check with its measured value and threshold, including the
# negative control (the same run without weight decay).

# %%
# a small grokking instance: 47 x 47 sums, a narrow MLP, a larger learning rate, 1,500 steps
SMALL = dict(p=47, embed_dim=32, width=128, lr=0.01, steps=1500)
result = phenomlab.run("grokking", seed=0, store=STORE, **SMALL)
print(result.verdict)
print("figures:", result.figures)

# %% [markdown]
# ## 2. Probe your own model
# The probes are functions on tensors and on any `nn.Module`. Here: an MLP trained on MNIST-1D (generated locally),
# then its neural-collapse statistics (Papyan et al. 2020) at the penultimate layer and the top Hessian eigenvalue
# of its training loss.

# %%
import torch.nn.functional as F  # noqa: E402

ds = data.mnist1d(n_train=1000, n_test=300, seed=0)
net = models.MLP(ds.input_dim, ds.n_classes, width=64, depth=2)
history = train(net, ds.train(), TrainConfig(steps=300, lr=1e-3, optimizer="adam"), eval_sets={"test": ds.test()})
print("test accuracy:", history.column("test_acc")[-1])
nc = probes.neural_collapse(net, ds.train(), layer=net.penultimate)
print("NC1 (within / between class variability):", nc.nc1)
sharpness = probes.top_hessian_eigenvalue(net, F.cross_entropy, ds.train())
print("top Hessian eigenvalue:", sharpness)

# %% [markdown]
# ## 3. Sweep weight decay across seeds
# The same command runs locally (here) or on a Ray cluster (`executor="ray"`). Finished runs are read from the store,
# so the seed-0, weight-decay-1 run of part 1 is not trained again. Use `seeds="0-2"` or more for real work; two
# keep this tutorial short.

# %%
sweep = phenomlab.sweep("grokking", {"weight_decay": [0.3, 1.0]}, seeds="0-1", store=STORE, base=SMALL)
print(sweep.compare()[["group", "metric", "mean", "n"]].to_string(index=False))
status = {(t.overrides["weight_decay"], t.seed): o.status for t, o in zip(sweep.trials, sweep.outcomes, strict=True)}
print("run status by (weight decay, seed):", status)
