"""Mixed precision (train.precision): bf16 autocast for every method, fp16 with a gradient
scaler whose overflowing steps are retried, and fp32 runs unchanged."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sparseflow.config import load_config, run_id
from sparseflow.errors import ConfigError
from sparseflow.store.checkpoint import load_checkpoint
from sparseflow.store.database import Store
from sparseflow.training import loop
from sparseflow.training.run import execute

BASE = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=128", "train.batch_size=32",
        "train.duration=4ep", "data.heldout=64", "sparse.update_every=8", "sparse.prune_every=4",
        "sparsity=0.9", "optim.lr=0.1"]
SPARSE_METHODS = ("static", "set", "rigl", "gradual", "lottery")


def final(summary):
    return load_checkpoint(summary["checkpoint"])


def series(root, rid, name):
    with Store(root / "sparseflow.db") as st:
        return st.series(rid, name)


def test_fp32_is_the_default_and_names_the_same_run(root, tmp_path):
    unset = load_config(None, BASE + ["method=rigl"])
    fp32 = load_config(None, BASE + ["method=rigl", "train.precision=fp32"])
    assert run_id(unset) == run_id(fp32)
    assert run_id(load_config(None, BASE + ["method=rigl", "train.precision=bf16"])) \
        != run_id(unset)  # it changes the numbers: another run
    a = execute(unset, root=root, progress=False)
    b = execute(fp32, root=tmp_path / "other", progress=False)
    for k in ("test_loss", "train_loss", "test_accuracy"):
        assert a[k] == b[k]
    wa, wb = final(a)["model"], final(b)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fp32_loop_is_the_plain_loop_bit_for_bit(root):
    """The fp32 path is the loop as it was before mixed precision and the device loader: a
    hand-written loop with the same batches, augmentation draws and learning rates ends with
    exactly the same weights."""
    from sparseflow.training import optim as optim_mod
    from sparseflow.training.optim import build_optimizer
    from sparseflow.training.run import load_data, make_model

    cfg = load_config(None, ["dataset=digits", "model=mlp", "data.augment=true", "seed=3",
                             "train.batch_size=64", "train.duration=2ep", "data.heldout=64",
                             "flow.enabled=false"])
    s = execute(cfg, root=root, progress=False)

    data = load_data(cfg)
    model = make_model(cfg, data)
    opt = build_optimizer(cfg.optim, model)
    n, bs = len(data.x_train), cfg.train.batch_size
    spe = n // bs
    total = 2 * spe
    for step in range(total):
        optim_mod.set_lr(opt, optim_mod.lr_factor(step, total, cfg.optim.schedule, 0,
                                                  tuple(cfg.optim.milestones), cfg.optim.gamma))
        epoch, pos = divmod(step, spe)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003
                                                                         + epoch))
        idx = perm[pos * bs : (pos + 1) * bs]
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * step + 1)
        x = data.augment(data.x_train[idx], g)
        loss = F.cross_entropy(model(x), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    saved = final(s)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(saved[k], v), k


@pytest.mark.parametrize("method", SPARSE_METHODS)
def test_bf16_trains_every_method_with_exact_masks(method, root):
    cfg = load_config(None, BASE + [f"method={method}", "train.precision=bf16"])
    s = execute(cfg, root=root, progress=False)
    assert s["status"] == "finished" and s["steps"] == 64
    losses = [v for _, v in series(root, s["run_id"], "train_loss")]
    assert len(losses) == 4 and losses[-1] < 0.75 * losses[0]  # it learns
    ckpt = final(s)
    masks, weights = ckpt["callbacks"]["sparsifier"]["masks"], ckpt["model"]
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)  # exact count
    for name, m in masks.items():
        assert weights[name].dtype == torch.float32  # float32 master weights
        assert torch.all(weights[name][~m] == 0), name
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    with Store(root / "sparseflow.db") as st:
        flow = [r for r in st.metrics(s["run_id"], prefix="flow/")]
    assert flow and all(math.isfinite(r["value"]) for r in flow)
    if method in ("set", "rigl"):
        assert s["mask_updates"] > 0


def test_flow_is_measured_in_float32(root, tmp_path):
    """At step 0 the weights of a bf16 and an fp32 run are the same, so float32 measurements of
    them are equal bit for bit: measuring under autocast would round them to bf16."""
    ov = BASE + ["method=rigl", "train.duration=8it", "flow.around_updates=1"]
    a = execute(load_config(None, ov), root=root, progress=False)
    b = execute(load_config(None, ov + ["train.precision=bf16"]), root=tmp_path / "b",
                progress=False)
    for name in ("flow/grad_l2", "flow/egf_l1", "flow/grad_l1"):
        va, vb = series(root, a["run_id"], name), series(tmp_path / "b", b["run_id"], name)
        assert va[0][0] == vb[0][0] == 0 and va[0][1] == vb[0][1], name
    # and later measurements differ: the training did run in bf16
    assert series(root, a["run_id"], "flow/grad_l2")[-1][1] != \
        series(tmp_path / "b", b["run_id"], "flow/grad_l2")[-1][1]


def test_autocast_wraps_only_the_forward_and_loss(root, monkeypatch):
    """Callbacks (measurements, mask updates) run outside autocast; the step's forward inside."""
    from sparseflow.training.callbacks import Callback

    seen = []

    class Spy(Callback):
        name = "spy"

        def after_backward(self, trainer):
            seen.append(("after_backward", torch.is_autocast_enabled("cpu")))

        def after_step(self, trainer):
            seen.append(("after_step", torch.is_autocast_enabled("cpu")))

    inside = []
    orig = F.cross_entropy

    def spy_ce(*args, **kw):
        inside.append(torch.is_autocast_enabled("cpu"))
        return orig(*args, **kw)

    monkeypatch.setattr(loop.F, "cross_entropy", spy_ce)
    execute(load_config(None, BASE + ["method=rigl", "train.duration=3it",
                                      "train.precision=bf16", "flow.enabled=false"]),
            root=root, progress=False, callbacks=[Spy()])
    assert inside[:3] == [True] * 3  # the three training steps (evaluation follows, outside)
    assert seen and not any(on for _, on in seen)


def test_bad_precision_is_one_line(root):
    with pytest.raises(ConfigError, match=r"^train\.precision: 'fp8' is not one of"):
        load_config(None, BASE + ["train.precision=fp8"])
    with pytest.raises(ConfigError, match=r"^train\.precision: bf16 needs "
                                          r"sparse\.execution=masked"):
        load_config(None, BASE + ["method=rigl", "train.precision=bf16",
                                  "sparse.execution=sparse"])
    # dense training has no sparse execution: any precision goes
    load_config(None, BASE + ["method=dense", "train.precision=bf16", "sparse.execution=auto"])


# -- fp16: the gradient scaler ------------------------------------------------------------------

class _Poison(torch.autograd.Function):
    """Identity forward; backward returns an infinite gradient (an fp16 overflow)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


@pytest.fixture
def poison(monkeypatch):
    """``poison(steps)``: the first attempt (every attempt with ``every_attempt``) of each
    0-based step in ``steps`` overflows (its logits' gradient is infinite); returns the list
    of the steps of every training attempt."""
    calls: list[int] = []

    def install(steps, every_attempt=False):
        orig = loop.Trainer._scaled_backward
        orig_ce = F.cross_entropy
        state = {"step": None}

        def scaled_backward(self, x, y, buffers):
            state["step"], state["attempt"] = self.step, 0
            try:
                return orig(self, x, y, buffers)
            finally:
                state["step"] = None  # evaluation and measurements are not attempts

        def ce(out, y, *a, **kw):
            if state["step"] is not None:
                calls.append(state["step"])
                hit = state["step"] in steps and (every_attempt or state["attempt"] == 0)
                state["attempt"] += 1
                if hit:
                    out = _Poison.apply(out)
            return orig_ce(out, y, *a, **kw)

        monkeypatch.setattr(loop.Trainer, "_scaled_backward", scaled_backward)
        monkeypatch.setattr(loop.F, "cross_entropy", ce)
        return calls

    return install


FP16 = BASE + ["method=rigl", "train.precision=fp16", "train.duration=2ep",
               "sparse.grow_batch=train"]


def test_fp16_trains_with_exact_masks(root):
    s = execute(load_config(None, FP16), root=root, progress=False)
    assert s["status"] == "finished" and s["steps"] == 32 and s["mask_updates"] == 3
    ckpt = final(s)
    assert ckpt["scaler"]["scale"] == 2.0 ** 16  # no overflow in this short run
    masks, weights = ckpt["callbacks"]["sparsifier"]["masks"], ckpt["model"]
    for name, m in masks.items():
        assert weights[name].dtype == torch.float32 and torch.all(weights[name][~m] == 0)
    assert s["test_accuracy"] > 0.5


def test_overflowing_step_is_retried_and_advances_no_schedule(root, tmp_path, poison):
    """Steps 3 and 7 (the step whose gradients RigL scores at its first update, after
    optimiser step 8) overflow once: each is redone on the same batch at half the scale, so
    the run takes exactly as many optimiser steps, updates its masks at the same steps, and
    its sparsifier counts the same steps as the trainer."""
    clean = execute(load_config(None, FP16), root=tmp_path / "clean", progress=False)
    calls = poison({3, 7})
    s = execute(load_config(None, FP16), root=root, progress=False)
    assert s["status"] == "finished" and s["steps"] == clean["steps"] == 32
    assert s["fp16_retries"] == 2 and clean["fp16_retries"] == 0
    assert calls.count(3) == 2 and calls.count(7) == 2 and calls.count(4) == 1
    ckpt, ref = final(s), final(clean)
    assert ckpt["scaler"]["scale"] == ref["scaler"]["scale"] / 4
    assert ckpt["callbacks"]["sparsifier"]["step"] == 32
    assert s["mask_updates"] == clean["mask_updates"] == 3
    topo = [st for st, _ in series(root, s["run_id"], "topology/churn")]
    assert topo == [st for st, _ in series(tmp_path / "clean", clean["run_id"], "topology/churn")]
    masks = ckpt["callbacks"]["sparsifier"]["masks"]
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)
    for name, m in masks.items():
        assert torch.all(ckpt["model"][name][~m] == 0)
    # scaling by powers of two: the same training up to fp16 rounding of the scaled gradients
    assert s["test_loss"] == pytest.approx(clean["test_loss"], rel=1e-2)


def test_rigl_scores_unscaled_gradients(root, tmp_path, monkeypatch):
    """RigL's grow scores are the true gradients in fp16 too (not 2^16 times larger)."""
    from sparseflow.methods.dynamic import RigL

    norms: list[float] = []
    orig = RigL.prepare_scores

    def spy(self):
        orig(self)
        norms.append(sum(float(g.float().norm()) ** 2 for g in self._dense_grads.values()))

    monkeypatch.setattr(RigL, "prepare_scores", spy)
    ov = BASE + ["method=rigl", "train.duration=16it"]  # one update, after step 8
    execute(load_config(None, ov), root=root, progress=False)
    execute(load_config(None, ov + ["train.precision=fp16"]), root=tmp_path / "b",
            progress=False)
    assert len(norms) == 2
    assert math.sqrt(norms[1] / norms[0]) == pytest.approx(1.0, rel=0.05)


def test_retry_restores_batchnorm_statistics(root, tmp_path, poison):
    """The statistics a retried attempt accumulated are undone: after one step, a run whose
    step overflowed once has the BatchNorm buffers of one that did not."""
    ov = BASE + ["method=static", "arch.batchnorm=true", "train.precision=fp16",
                 "train.duration=1it", "flow.enabled=false"]
    clean = final(execute(load_config(None, ov), root=tmp_path / "clean", progress=False))
    poison({0})
    hit = final(execute(load_config(None, ov), root=root, progress=False))
    bufs = [k for k in clean["model"] if "running" in k or "num_batches" in k]
    assert bufs
    for k in bufs:
        assert torch.equal(hit["model"][k], clean["model"][k]), k
    assert hit["scaler"]["scale"] == clean["scaler"]["scale"] / 2


def test_overflow_that_never_ends_is_divergence(root, poison, monkeypatch):
    monkeypatch.setattr(loop, "MAX_RETRIES", 4)
    calls = poison({5}, every_attempt=True)
    s = execute(load_config(None, FP16), root=root, progress=False)
    assert s["status"] == "diverged" and s["diverged_step"] == 6
    assert calls.count(5) == 4


def test_fp16_resume_restores_the_scale(root, tmp_path, poison, stop_after):
    """The scaler's state is in every checkpoint: a run interrupted after an overflow halved
    the scale resumes at that scale and ends exactly as an uninterrupted one."""
    poison({2})
    cfg = load_config(None, FP16 + ["train.checkpoint_every=5it"])
    full = execute(cfg, root=tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, root=root, progress=False, callbacks=[stop_after(12)])
    resumed = execute(cfg, root=root, progress=False)
    assert resumed["test_loss"] == full["test_loss"]
    assert resumed["fp16_retries"] == full["fp16_retries"] == 1
    a, b = final(resumed), final(full)
    assert a["scaler"] == b["scaler"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
