"""Training batches held on the device (data.on_device) and channels_last (train.channels_last):
the same batches as the CPU path, deterministic per seed, every example once per epoch, crops
and flips as a per-example reference computes them, exact resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparseflow.config import load_config, run_id
from sparseflow.data import RandomCrop
from sparseflow.data.device_loader import TrainBatches, fits_on_device, step_seed
from sparseflow.errors import ConfigError
from sparseflow.store.checkpoint import load_checkpoint
from sparseflow.training.run import execute

CPU = torch.device("cpu")


def tiny_images(n: int = 24, c: int = 2, h: int = 5, w: int = 4) -> torch.Tensor:
    """Images whose every pixel names itself: value = 1000 n + 100 c + 10 row + col."""
    i = torch.arange(n)[:, None, None, None] * 1000
    ch = torch.arange(c)[None, :, None, None] * 100
    r = torch.arange(h)[None, None, :, None] * 10
    col = torch.arange(w)[None, None, None, :]
    return (i + ch + r + col).float()


def reference_crop(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool,
                   fill: tuple[float, ...]) -> torch.Tensor:
    """One example at a time: pad with ``fill``, cut at the drawn offset, mirror if drawn
    (the draws in RandomCrop's order: all offsets, then all flip bits)."""
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    out = torch.empty_like(x)
    for k in range(n):
        padded = torch.empty(c, h + 2 * pad, w + 2 * pad)
        for ch in range(c):
            padded[ch] = fill[ch] if len(fill) > 1 else fill[0]
        padded[:, pad : pad + h, pad : pad + w] = x[k]
        r0, c0 = int(offsets[0, k]), int(offsets[1, k])
        crop = padded[:, r0 : r0 + h, c0 : c0 + w]
        out[k] = crop.flip(-1) if flips[k] else crop
    return out


def loader(x, y, *, on_device=True, seed=0, batch_size=6, augment=None, **kw):
    return TrainBatches(x, y, batch_size=batch_size, seed=seed, device=CPU,
                        on_device=on_device, augment=augment, **kw)


def test_device_path_gives_the_cpu_path_batches():
    x, y = tiny_images(), torch.arange(24)
    crop = RandomCrop(pad=2, flip=True, fill=(-1.0, -2.0))
    on, off = loader(x, y, augment=crop), loader(x, y, augment=crop, on_device=False)
    for step in range(10):
        (xa, ya), (xb, yb) = on.batch(step), off.batch(step)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_crops_and_flips_match_a_per_example_reference():
    x, y = tiny_images(), torch.arange(24)
    for pad, flip, fill in ((1, False, (0.5,)), (2, True, (-1.0, -2.0)), (0, True, (0.0,))):
        crop = RandomCrop(pad=pad, flip=flip, fill=fill)
        batches = loader(x, y, augment=crop, seed=5)
        for step in (0, 3, 7):
            xb, yb = batches.batch(step)
            raw = x[yb]  # labels are the example indices
            ref = reference_crop(raw, torch.Generator().manual_seed(step_seed(5, step)), pad,
                                 flip, fill)
            assert torch.equal(xb, ref), (pad, flip, step)
    # and some examples really moved and flipped
    xb, yb = loader(x, y, augment=RandomCrop(pad=2, flip=True, fill=(0.0, 0.0))).batch(0)
    assert not torch.equal(xb, x[yb])


def test_deterministic_per_seed():
    x, y = tiny_images(), torch.arange(24)
    crop = RandomCrop(pad=1, flip=True, fill=(0.0, 0.0))
    a, b, c = (loader(x, y, seed=s, augment=crop) for s in (1, 1, 2))
    for step in range(8):
        assert torch.equal(a.batch(step)[0], b.batch(step)[0])
    assert not all(torch.equal(a.batch(s)[1], c.batch(s)[1]) for s in range(8))


@pytest.mark.parametrize("n, batch_size", [(24, 6), (26, 6)])
def test_every_example_once_per_epoch(n, batch_size):
    x, y = tiny_images(n), torch.arange(n)
    b = loader(x, y, batch_size=batch_size)
    spe = n // batch_size
    epochs = []
    for epoch in range(3):
        seen = torch.cat([b.batch(epoch * spe + p)[1] for p in range(spe)])
        assert len(seen) == spe * batch_size and len(set(seen.tolist())) == len(seen)
        if n % batch_size == 0:
            assert sorted(seen.tolist()) == list(range(n))
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])  # a new order every epoch


def test_ranks_split_every_batch():
    x, y = tiny_images(), torch.arange(24)
    whole = loader(x, y, batch_size=8)
    parts = [loader(x, y, batch_size=8, rank=r, world=3) for r in range(3)]
    for step in range(6):
        got = torch.cat([p.batch(step)[1] for p in parts])
        assert sorted(got.tolist()) == sorted(whole.batch(step)[1].tolist())


def test_resume_mid_epoch_gives_the_same_batches():
    """The batch of a step depends on (seed, step) only: a loader made at step 9 (a resumed
    run) gives what one that went through steps 0..8 gives."""
    x, y = tiny_images(), torch.arange(24)
    crop = RandomCrop(pad=1, flip=True, fill=(0.0, 0.0))
    ran = loader(x, y, augment=crop)
    expected = [ran.batch(s) for s in range(14)]
    fresh = loader(x, y, augment=crop)
    for s in range(9, 14):
        assert all(torch.equal(u, v) for u, v in zip(fresh.batch(s), expected[s], strict=True))


def test_channels_last_batches():
    x, y = tiny_images(), torch.arange(24)
    b = loader(x, y, memory_format=torch.channels_last)
    xb, _ = b.batch(0)
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(xb, loader(x, y).batch(0)[0])


def test_auto_rule(monkeypatch):
    assert not fits_on_device(10, CPU)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4000, 8000))
    cuda = torch.device("cuda")
    assert fits_on_device(1000, cuda)
    assert fits_on_device(1000, cuda, RandomCrop(pad=4, flip=True))
    assert not fits_on_device(1001, cuda)  # more than a quarter of the free memory
    assert not fits_on_device(10, cuda, lambda x, g: x)  # an augment of one's own: CPU


# -- runs ----------------------------------------------------------------------------------------

DIGITS = ["dataset=digits", "model=mlp", "data.augment=true", "train.batch_size=64",
          "train.duration=2ep", "data.heldout=64", "method=rigl", "sparse.update_every=5"]


def test_run_on_device_is_the_same_run(root, tmp_path):
    a = execute(load_config(None, DIGITS), root=root, progress=False)
    cfg = load_config(None, DIGITS + ["data.on_device=true"])
    assert run_id(cfg) == a["run_id"]
    b = execute(cfg, root=tmp_path / "b", progress=False)
    for k in ("test_loss", "train_loss", "test_accuracy"):
        assert a[k] == b[k]
    wa, wb = load_checkpoint(a["checkpoint"])["model"], load_checkpoint(b["checkpoint"])["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_on_device_resume_mid_epoch_is_exact(root, tmp_path, stop_after):
    cfg = load_config(None, DIGITS + ["data.on_device=true", "train.checkpoint_every=7it"])
    full = execute(cfg, root=tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, root=root, progress=False, callbacks=[stop_after(30)])  # epoch 2 of 22
    resumed = execute(cfg, root=root, progress=False)
    for k in ("test_loss", "train_loss", "train_accuracy", "steps"):
        assert resumed[k] == full[k], k


@pytest.mark.parametrize("value, expected", [("true", True), ("false", False),
                                             ("auto", "auto")])
def test_on_device_values(value, expected):
    assert load_config(None, [f"data.on_device={value}"]).data.on_device == expected


def test_bad_on_device_is_one_line():
    with pytest.raises(ConfigError, match=r"^data\.on_device: expected true, false or auto"):
        load_config(None, ["data.on_device=gpu"])


def test_channels_last_convnet_computes_the_same():
    """Forward and weight gradients of a BatchNorm ResNet in channels_last equal the
    contiguous ones up to float rounding."""
    from sparseflow.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", (3, 16, 16), 10, widths=[8, 16, 32])
    last = build_model("resnet20", (3, 16, 16), 10, widths=[8, 16, 32])
    last.load_state_dict(model.state_dict())
    last = last.to(memory_format=torch.channels_last)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    outs = []
    for m, xb in ((model, x), (last, x.contiguous(memory_format=torch.channels_last))):
        loss = F.cross_entropy(m(xb), y)
        loss.backward()
        outs.append((loss.detach(), {n: p.grad for n, p in m.named_parameters()}))
    assert outs[0][0] == pytest.approx(float(outs[1][0]), rel=1e-5)
    for n, g in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][n], g, rtol=1e-4, atol=1e-5)
    conv = next(p for p in last.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_rigl_run_keeps_exact_masks(root, tmp_path):
    ov = ["dataset=digits", "model=resnet20", "arch.widths=4,8,16", "data.augment=true",
          "train.batch_size=64", "train.duration=1ep", "data.heldout=64", "method=rigl",
          "sparse.update_every=5"]
    plain = execute(load_config(None, ov), root=tmp_path / "plain", progress=False)
    cfg = load_config(None, ov + ["train.channels_last=true"])
    assert run_id(cfg) == plain["run_id"]
    s = execute(cfg, root=root, progress=False)
    ckpt = load_checkpoint(s["checkpoint"])
    masks = ckpt["callbacks"]["sparsifier"]["masks"]
    ref = load_checkpoint(plain["checkpoint"])["callbacks"]["sparsifier"]["masks"]
    for name, m in masks.items():
        assert int(m.sum()) == int(ref[name].sum())  # the same exact counts
        assert torch.all(ckpt["model"][name][~m] == 0), name
    assert s["mask_updates"] == plain["mask_updates"] == 3
    assert s["test_loss"] == pytest.approx(plain["test_loss"], rel=0.05)
