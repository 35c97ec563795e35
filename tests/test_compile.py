"""train.compile: the training forward pass through torch.compile, compiled once for a whole
run (mask updates, measurements and evaluations do not recompile it), the same numbers.

The tests count compilations through a backend of their own around ``aot_eager`` (AOTAutograd
traces forward and backward as inductor would, without generating code): the default backend,
inductor, needs a C++ compiler and a minute per model on a small CPU; it was checked by hand
(docs/science.md section 15).
"""

from __future__ import annotations

import pytest
import torch

from sparseflow.config import load_config, run_id
from sparseflow.errors import ConfigError
from sparseflow.store.checkpoint import load_checkpoint
from sparseflow.training import loop
from sparseflow.training.run import execute

BASE = ["dataset=synthetic", "model=mlp", "arch.depth=2", "arch.width=64", "train.batch_size=32",
        "train.duration=3ep", "data.heldout=64", "sparse.update_every=8", "sparsity=0.9",
        "flow.around_updates=1", "flow.every=5"]


@pytest.fixture
def counting_backend(monkeypatch):
    """Compile with ``aot_eager`` and count: dynamo graphs, forward and backward graphs, graph
    breaks and recompilations."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    seen = {"graphs": 0, "forward": 0, "backward": 0}

    def fw(gm, example_inputs):
        seen["forward"] += 1
        return make_boxed_func(gm.forward)

    def bw(gm, example_inputs):
        seen["backward"] += 1
        return make_boxed_func(gm.forward)

    aot = aot_autograd(fw_compiler=fw, bw_compiler=bw)

    def backend(gm, example_inputs):
        seen["graphs"] += 1
        return aot(gm, example_inputs)

    monkeypatch.setattr(loop, "COMPILE_BACKEND", backend)
    yield seen, counters
    torch._dynamo.reset()


def test_compiled_rigl_compiles_once_over_its_mask_updates(root, tmp_path, counting_backend):
    seen, counters = counting_backend
    eager = execute(load_config(None, BASE + ["method=rigl"]), root=tmp_path / "eager",
                    progress=False)
    cfg = load_config(None, BASE + ["method=rigl", "train.compile=true"])
    assert run_id(cfg) == run_id(load_config(None, BASE + ["method=rigl"]))  # not hashed
    s = execute(cfg, root=root, progress=False)
    assert s["mask_updates"] == 4  # updates after steps 8, 16, 24, 32 (update_end 0.75 of 48)
    # one graph for the whole run: mask updates, flow measurements around them and
    # evaluations (eager, on the module) neither break nor recompile it
    assert seen == {"graphs": 1, "forward": 1, "backward": 1}
    assert not counters["graph_break"] and not counters["recompiles"]
    assert s["test_loss"] == pytest.approx(eager["test_loss"], rel=1e-6)
    assert s["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-6)
    ckpt = load_checkpoint(s["checkpoint"])
    assert not any(k.startswith("_orig_mod") for k in ckpt["model"])  # the eager names
    masks = ckpt["callbacks"]["sparsifier"]["masks"]
    for name, m in masks.items():
        assert torch.equal(m, load_checkpoint(eager["checkpoint"])["callbacks"]["sparsifier"]
                           ["masks"][name])
        assert torch.all(ckpt["model"][name][~m] == 0)


def test_compiled_convnet_in_bf16_channels_last(root, counting_backend):
    """BatchNorm, residual blocks, augmentation, bf16 autocast and channels_last: still one
    graph across RigL's mask updates."""
    seen, counters = counting_backend
    ov = ["dataset=digits", "model=resnet20", "arch.widths=4,8,16", "data.augment=true",
          "train.batch_size=64", "train.duration=1ep", "data.heldout=64", "method=rigl",
          "sparse.update_every=5", "flow.around_updates=1", "train.compile=true",
          "train.precision=bf16", "train.channels_last=true"]
    s = execute(load_config(None, ov), root=root, progress=False)
    assert s["status"] == "finished" and s["mask_updates"] == 3
    assert seen == {"graphs": 1, "forward": 1, "backward": 1}
    assert not counters["graph_break"] and not counters["recompiles"]


def test_compiled_gradual_pruning_and_fp16(root, counting_backend):
    seen, _ = counting_backend
    s = execute(load_config(None, BASE + ["method=gradual", "sparse.prune_every=4",
                                          "train.compile=true", "train.precision=fp16"]),
                root=root, progress=False)
    assert s["status"] == "finished" and s["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert seen["graphs"] == 1


@pytest.mark.parametrize("execution", ["sparse", "auto"])
def test_compile_with_sparse_execution_is_refused(execution):
    with pytest.raises(ConfigError, match=r"^train\.compile: needs sparse\.execution=masked"):
        load_config(None, BASE + ["method=rigl", "train.compile=true",
                                  f"sparse.execution={execution}"])
