"""Sparse methods inside full runs: every method, mask sources, tickets, small dense, resume."""

from __future__ import annotations

import pytest
import torch

from sparseflow.cli import main
from sparseflow.config import load_config, run_id
from sparseflow.methods import METHODS
from sparseflow.models.sizing import dense_weight_count
from sparseflow.store.checkpoint import list_checkpoints, load_checkpoint
from sparseflow.store.database import Store
from sparseflow.store.paths import run_dir
from sparseflow.training.run import execute

BASE = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=64", "train.batch_size=32",
        "train.duration=3ep", "data.heldout=64", "sparse.update_every=8", "sparse.prune_every=4",
        "sparsity=0.9"]


def ckpt_masks(summary):
    return load_checkpoint(summary["checkpoint"])["callbacks"]["sparsifier"]["masks"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_reports_sparsity(method, root):
    s = execute(load_config(None, BASE + [f"method={method}"]), root=root, progress=False)
    assert s["status"] == "finished" and s["steps"] == 48
    if method in ("dense", "small_dense"):
        assert s["sparsity"] == 0.0
        return
    masks = ckpt_masks(s)
    total = sum(m.numel() for m in masks.values())
    nnz = sum(int(m.sum()) for m in masks.values())
    if method == "srigl":  # the distribution's counts rounded to a whole fan-in per unit,
        # less what ablation leaves unused (fewer than one weight per live unit of a layer)
        from sparseflow.sparsity import Pattern, pattern_counts

        dist = load_config(None, BASE).distribution
        want = sum(pattern_counts({n: tuple(m.shape) for n, m in masks.items()}, 0.9, dist,
                                  Pattern("fan_in")).values())
        rows = sum(m.shape[0] for m in masks.values())
        assert want - rows < nnz <= want
    else:
        assert nnz == round(0.1 * total)  # exact global count
    assert s["sparsity"] == pytest.approx(1 - nnz / total, abs=1e-6)
    model = load_checkpoint(s["checkpoint"])["model"]
    for name, m in masks.items():
        assert torch.all(model[name][~m] == 0), name
        assert s["densities"][name] == pytest.approx(m.float().mean().item(), abs=1e-6)
    with Store(root / "sparseflow.db") as st:
        names = {r["name"] for r in st.metrics(s["run_id"], prefix="topology/")}
    assert "topology/sparsity" in names and any(n.startswith("topology/density/") for n in names)
    if method in ("set", "rigl", "rigl_inverted"):
        assert s["mask_updates"] > 0 and "topology/churn" in names


def test_scratch_on_pruned_mask_and_lottery_ticket(root):
    scratch = execute(load_config(None, BASE + ["method=static", "sparse.mask=pruned", "seed=3"]),
                      root=root, progress=False)
    src_cfg = load_config(None, BASE + ["method=gradual", "distribution=erk", "seed=1000"])
    src_cfg.sparse.update_every = 100  # source runs use neutral settings for other methods
    src = execute(src_cfg, root=root, progress=False)  # already trained as the source: skipped
    with Store(root / "sparseflow.db") as st:
        assert st.get_run(src["run_id"])["status"] == "finished"
    src_masks = ckpt_masks(src)
    for n, m in ckpt_masks(scratch).items():
        assert torch.equal(m, src_masks[n])

    ticket = execute(load_config(None, BASE + ["method=lottery", "seed=4"]), root=root,
                     progress=False)
    assert ticket["ticket_source"] == src["run_id"]
    src0 = load_checkpoint(list_checkpoints(run_dir(root, src["run_id"]) / "checkpoints")[0])
    t0 = load_checkpoint(list_checkpoints(run_dir(root, ticket["run_id"]) / "checkpoints")[0])
    for n, m in src_masks.items():
        assert torch.equal(t0["model"][n], src0["model"][n] * m)  # rewound to the source's init
    shuffled = execute(load_config(None, BASE + ["method=static", "sparse.mask=pruned",
                                                 "sparse.shuffle_mask=true", "seed=3"]),
                       root=root, progress=False)
    for n, m in ckpt_masks(shuffled).items():
        assert int(m.sum()) == int(src_masks[n].sum()) and not torch.equal(m, src_masks[n])


def test_imp_rounds_nest(root):
    s = execute(load_config(None, BASE + ["method=lottery", "sparse.ticket=imp",
                                          "sparse.rounds=2"]), root=root, progress=False)
    with Store(root / "sparseflow.db") as st:
        parents = [r for r in st.list_runs() if r["method"] == "lottery" and
                   r["config"]["sparse"]["rounds"] == 1]
    assert len(parents) == 1
    parent = parents[0]["summary"]
    assert parent["sparsity"] == pytest.approx(1 - 0.1 ** 0.5, abs=2e-3)
    pm, m2 = ckpt_masks(parent), ckpt_masks(s)
    for n in m2:
        assert not torch.any(m2[n] & ~pm[n])  # round 2 prunes within round 1's mask
    assert s["sparsity"] == pytest.approx(0.9, abs=2e-3)


def test_small_dense_matches_the_sparse_weight_count(root):
    s = execute(load_config(None, BASE + ["method=small_dense"]), root=root, progress=False)
    target = round(0.1 * dense_weight_count("mlp", (20,), 4, depth=2, width=64))
    got = dense_weight_count("mlp", (20,), 4, widths=s["small_dense_widths"])
    assert abs(got - target) / target < 0.1


def test_rigl_resume_is_exact(root, tmp_path, stop_after):
    ov = BASE + ["method=rigl", "init=sparse", "train.checkpoint_every=10it",
                 "sparse.grow_batch=heldout"]
    cfg = load_config(None, ov)
    full = execute(cfg, root=tmp_path / "full", progress=False)

    with pytest.raises(KeyboardInterrupt):
        execute(cfg, root=root, progress=False, callbacks=[stop_after(21)])
    resumed = execute(cfg, root=root, progress=False)
    assert resumed["test_loss"] == full["test_loss"]
    for n, m in ckpt_masks(full).items():
        assert torch.equal(m, ckpt_masks(resumed)[n])


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["sparsity=1.0"], "sparsity"),
        (["sparsity=-0.1"], "sparsity"),
        (["method=magic"], "valid: dense"),
        (["distribution=gaussian"], "distribution"),
        (["method=static", "sparse.mask=nope"], "sparse.mask"),
        (["method=rigl", "sparse.grow_batch=heldout", "data.heldout=0"], "data.heldout"),
        (["method=static", "sparsity=0.999", "arch.width=4", "arch.depth=3"], "method=static"),
        (["method=static", "sparse.layers=nosuchlayer"], "nosuchlayer"),
    ],
)
def test_bad_sparse_input_exit_2(capsys, root, overrides, fragment):
    code = main(["run", "--root", str(root), "--no-progress", "--set", *BASE, *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_mask_checkpoint_with_wrong_shapes(capsys, root):
    s = execute(load_config(None, BASE + ["method=static"]), root=root, progress=False)
    code = main(["run", "--root", str(root), "--no-progress", "--set", *BASE, "arch.width=32",
                 "method=static", f"sparse.mask={s['checkpoint']}"])
    err = capsys.readouterr().err
    assert code == 2 and "shape" in err and len(err.strip().splitlines()) == 1
    assert run_id(load_config(None, BASE)) != s["run_id"]


def test_two_processes_share_one_source_run(tmp_path):
    """Two scratch runs need the same pruning run: the second waits for it, it is trained once."""
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "sparseflow", "run", "--root", str(tmp_path), "--json",
            "--no-progress", "--set", *BASE, "data.n_train=8192", "arch.width=512",
            "train.duration=4ep", "method=static", "sparse.mask=pruned", "threads=1"]
    first = subprocess.Popen(args + ["seed=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/checkpoints/*.pt")):
        time.sleep(0.05)  # the first process is training the source run now
    second = subprocess.Popen(args + ["seed=2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [o[1][-500:] for o in outs]
    needs = [ln for _, err in outs for ln in err.splitlines() if "needs source run" in ln]
    waited = [ln for _, err in outs for ln in err.splitlines() if "another process" in ln]
    assert len(needs) == 2
    assert len(waited) <= 1  # normally 1: the second process waited instead of training it
    with Store(tmp_path / "sparseflow.db") as st:
        gradual = [r for r in st.list_runs() if r["method"] == "gradual"]
    assert len(gradual) == 1 and gradual[0]["status"] == "finished"


def test_scsdc_sparse_partner_matches_dense_counts_and_init():
    """SC-SDC: every layer of the wide sparse MLP keeps the dense MLP's count, and its active
    weights follow the dense layer's U(-1/sqrt(f), 1/sqrt(f)) with f the dense fan-in."""
    import math

    from sparseflow.data import load_dataset
    from sparseflow.models.sizing import dense_weight_count
    from sparseflow.training.optim import build_optimizer
    from sparseflow.training.run import make_model
    from sparseflow.training.sparsifier import build_sparsifier

    cfg = load_config(None, ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=200",
                             "method=static", "distribution=scsdc", "sparse.dense_width=50",
                             "init=matched", "data.heldout=0"])
    data = load_dataset("synthetic", heldout=())
    model = make_model(cfg, data)
    sp, _ = build_sparsifier(cfg, model, build_optimizer(cfg.optim, model), data, 10, 10,
                             lambda c: {}, None)
    dense = load_config(None, ["dataset=synthetic", "model=mlp", "arch.depth=2",
                               "arch.width=50"])
    dense_model = make_model(dense, data)
    dense_w = [m.weight for m in dense_model.modules() if isinstance(m, torch.nn.Linear)]
    assert list(sp.masks.nnz().values()) == [w.numel() for w in dense_w]
    assert sum(sp.masks.nnz().values()) == dense_weight_count("mlp", (20,), 4, depth=2, width=50)
    for (name, w), fan in zip(sp.params.items(), (20, 50, 50), strict=True):
        active = w.detach()[sp.masks[name]]
        bound = 1 / math.sqrt(fan)
        assert active.abs().max() <= bound
        assert active.var().item() == pytest.approx(bound ** 2 / 3, rel=0.15)
    with pytest.raises(Exception, match="scsdc"):
        load_config(None, ["method=rigl", "distribution=scsdc"])


@pytest.mark.parametrize("how", ["glorot", "he"])
def test_dense_base_init(how):
    from sparseflow.data import load_dataset
    from sparseflow.training.run import make_model

    cfg = load_config(None, ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=400",
                             f"arch.init={how}"])
    model = make_model(cfg, load_dataset("synthetic", heldout=()))
    w = model.hidden[0].linear.weight.detach()
    fan_out, fan_in = w.shape
    want = 2 / (fan_in + fan_out) if how == "glorot" else 2 / fan_in
    assert w.var().item() == pytest.approx(want, rel=0.1)
    assert torch.all(model.hidden[0].linear.bias == 0)


def test_mask_of_another_architecture_is_one_line(root):
    """A static run on the masks of a run whose model has other shapes: one ConfigError that
    names sparse.mask, the layer and both shapes."""
    from sparseflow.errors import ConfigError

    narrow = execute(load_config(None, [*BASE, "method=static", "arch.width=32",
                                        "train.duration=1ep"]), root=root, progress=False)
    cfg = load_config(None, [*BASE, "method=static", f"sparse.mask={narrow['checkpoint']}"])
    with pytest.raises(ConfigError) as err:
        execute(cfg, root=root, progress=False)
    msg = str(err.value)
    assert msg.startswith("sparse.mask: mask for ") and "(32, 20)" in msg and "(64, 20)" in msg
    assert "\n" not in msg
