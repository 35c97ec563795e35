"""Topology updates under sparsity patterns (``sparsity/pattern_updates.py``): ``drop_and_grow``
against a brute-force loop over atoms and groups, its equality with SET/RigL's unstructured
update, the counts of ``pattern_counts`` and the N:M steps of ``schedule_pattern``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparseflow.methods import RigL
from sparseflow.sparsity import (
    Pattern,
    drop_and_grow,
    parse_pattern,
    pattern_counts,
    pattern_violations,
    random_pattern_mask,
    schedule_pattern,
)
from sparseflow.sparsity.patterns import from_matrix, matrix_view


def _atoms_of(rows: int, cols: int, pat: Pattern) -> list[list[tuple[int, int]]]:
    """Every atom as the list of its (row, col) entries, in atom-matrix row-major order."""
    if pat.kind == "block":
        b = pat.block
        return [[(r0 + i, c0 + j) for i in range(b) for j in range(b)]
                for r0 in range(0, rows, b) for c0 in range(0, cols, b)]
    if pat.kind == "unit":
        return [[(r, c) for c in range(cols)] for r in range(rows)]
    return [[(r, c)] for r in range(rows) for c in range(cols)]


def _group_of(atom: int, rows: int, cols: int, pat: Pattern) -> int:
    if pat.kind == "nm":
        return atom // pat.m
    if pat.kind == "fan_in":
        return atom // cols
    return 0


def brute_drop_and_grow(mask: torch.Tensor, drop: torch.Tensor, grow: torch.Tensor, n_drop: int,
                        pat: Pattern, targets: list[int] | None = None,
                        exclude_dropped: bool = False) -> torch.Tensor:
    """The rule of ``drop_and_grow`` with Python loops and sorted lists (on 2-d tensors)."""
    rows, cols = mask.shape
    atoms = _atoms_of(rows, cols, pat)
    dsc = [sum(float(drop[r, c].abs()) for r, c in a) for a in atoms]
    gsc = [sum(float(grow[r, c]) for r, c in a) for a in atoms]
    active = [bool(mask[a[0]]) for a in atoms]
    groups = sorted({_group_of(i, rows, cols, pat) for i in range(len(atoms))})
    members = {g: [i for i in range(len(atoms)) if _group_of(i, rows, cols, pat) == g]
               for g in groups}
    before = {g: sum(active[i] for i in members[g]) for g in groups}
    tgt = before if targets is None else dict(zip(groups, targets, strict=True))
    # drop: lowest score first, among equal scores the higher index first
    order = sorted((i for i in range(len(atoms)) if active[i]), key=lambda i: (dsc[i], -i))
    kept = set(i for i in range(len(atoms)) if active[i]) - set(order[:n_drop])
    new = set()
    for g in groups:
        mine = sorted((i for i in members[g] if i in kept), key=lambda i: (-dsc[i], i))
        mine = mine[: tgt[g]]
        need = tgt[g] - len(mine)
        eligible = [i for i in members[g] if (not active[i] if exclude_dropped else i not in kept)]
        if exclude_dropped and need > len(eligible):
            back = sorted((i for i in members[g] if active[i] and i not in kept),
                          key=lambda i: (-dsc[i], i))[: need - len(eligible)]
            mine += back
            need -= len(back)
        grown = sorted(eligible, key=lambda i: (-gsc[i], i))[:need]
        new |= set(mine) | set(grown)
    out = torch.zeros(rows, cols, dtype=torch.bool)
    for i in new:
        for r, c in atoms[i]:
            out[r, c] = True
    return out


PATTERNS = ("unstructured", "2:4", "1:4", "3:8", "block:2x2", "block:4", "unit", "fan_in")


@settings(max_examples=60, deadline=None)
@given(pat=st.sampled_from(PATTERNS), rows_b=st.integers(1, 3), cols_b=st.integers(1, 3),
       density=st.floats(0.05, 0.95), alpha=st.floats(0.0, 1.0), exclude=st.booleans(),
       ties=st.booleans(), seed=st.integers(0, 2**16))
def test_drop_and_grow_matches_brute_force(pat: str, rows_b: int, cols_b: int, density: float,
                                           alpha: float, exclude: bool, ties: bool,
                                           seed: int) -> None:
    p = parse_pattern(pat)
    rows, cols = 4 * rows_b, 8 * cols_b
    g = torch.Generator().manual_seed(seed)
    from sparseflow.sparsity import achievable_count

    k = achievable_count((rows, cols), max(1, round(density * rows * cols)), p)
    mask = random_pattern_mask((rows, cols), k, p, g)
    w = torch.randn(rows, cols, generator=g)
    grow = torch.rand(rows, cols, generator=g)
    if ties:  # many equal scores: the index rule decides
        w = w.round()
        grow = (grow * 3).floor()
    from sparseflow.sparsity.pattern_updates import atom_mask

    n_atoms = int(atom_mask(mask, p).sum())
    n_drop = int(alpha * n_atoms)
    got = drop_and_grow(mask, w, grow, n_drop, p, exclude_dropped=exclude)
    want = brute_drop_and_grow(mask, w, grow, n_drop, p, exclude_dropped=exclude)
    assert torch.equal(got, want)
    assert pattern_violations(got, p) == []
    assert int(got.sum()) == int(mask.sum())  # every group back at its count


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(2, 6), cols=st.integers(3, 10), seed=st.integers(0, 2**16),
       data=st.data())
def test_per_unit_targets_match_brute_force(rows: int, cols: int, seed: int,
                                            data: st.DataObject) -> None:
    """fan_in with explicit per-unit targets (SRigL's ablation): ablated units empty, the
    others at the new fan-in."""
    p = Pattern("fan_in")
    g = torch.Generator().manual_seed(seed)
    k_row = data.draw(st.integers(1, cols - 1))
    mask = random_pattern_mask((rows, cols), k_row * rows, p, g)
    w, grow = torch.randn(rows, cols, generator=g), torch.rand(rows, cols, generator=g)
    targets = data.draw(st.lists(st.sampled_from([0, min(cols, k_row + 1)]), min_size=rows,
                                 max_size=rows))
    n_drop = data.draw(st.integers(0, k_row * rows))
    got = drop_and_grow(mask, w, grow, n_drop, p, targets=torch.tensor(targets))
    want = brute_drop_and_grow(mask, w, grow, n_drop, p, targets=targets)
    assert torch.equal(got, want)
    assert got.sum(dim=1).tolist() == targets


def test_unstructured_drop_and_grow_is_rigls_update() -> None:
    """With one group, the generic update is RigL's own (same drop, same growth) on Linear
    layers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = RigL(model, opt, sparsity=0.8, t_end=10, update_every=1, drop_fraction=0.3,
             drop_schedule="constant", distribution="uniform")
    before = {n: m.clone() for n, m in s.masks.masks.items()}
    x = torch.randn(16, 20)
    loss = model(x).square().mean()
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in s.params.items()}  # dense: deferred masking
    opt.step()
    weights = {n: p.detach().clone() for n, p in s.params.items()}
    s.step()
    for n, m in before.items():
        n_drop = int(0.3 * int(m.sum()))
        want = drop_and_grow(m, weights[n], grads[n].abs(), n_drop, Pattern())
        assert torch.equal(s.masks[n], want), n


def test_conv_groups_run_along_input_channels() -> None:
    """N:M groups of a conv weight are M consecutive input channels at one kernel position."""
    p = Pattern("nm", n=1, m=4)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 8, 2, 2, generator=g)
    mask = random_pattern_mask(w.shape, 0, p, g)
    new = drop_and_grow(mask, w, torch.rand(w.shape, generator=g), int(mask.sum()) // 2, p)
    per = new.permute(0, 2, 3, 1).reshape(3, 2, 2, 2, 4).sum(-1)  # (out, kh, kw, groups)
    assert bool((per == 1).all())
    assert torch.equal(from_matrix(matrix_view(new), new.shape), new)


def test_pattern_counts_round_the_distribution() -> None:
    shapes = {"a": (8, 16), "b": (4, 8)}
    c = pattern_counts(shapes, 0.75, "uniform", Pattern("block", block=4))
    assert c == {"a": 32, "b": 16}  # 32 = 2 blocks of 16; 8 -> one block of 16 (half up)
    c = pattern_counts(shapes, 0.9, "erk", Pattern("nm", n=2, m=4))
    assert c == {"a": 64, "b": 16}  # N:M ignores the distribution: N/M of every layer
    c = pattern_counts(shapes, 0.75, "uniform", Pattern("fan_in"))
    assert c == {"a": 32, "b": 8}  # 4 per row of a, 2 per row of b
    with pytest.raises(ValueError, match="layer 'b'.*not a multiple of 16"):
        pattern_counts({"a": (4, 16), "b": (4, 8)}, 0.5, "uniform", Pattern("nm", n=8, m=16))


@pytest.mark.parametrize(("density", "want"), [(1.0, None), (0.9, None), (0.8, "3:4"),
                                               (0.6, "2:4"), (0.5, "2:4"), (0.1, "2:4")])
def test_schedule_pattern_walks_n_down_to_its_final_value(density: float, want: str | None
                                                          ) -> None:
    got = schedule_pattern(Pattern("nm", n=2, m=4), density)
    assert (None if got is None else str(got)) == want
    assert schedule_pattern(Pattern("fan_in"), density) == Pattern("fan_in")


@pytest.mark.parametrize("pat", ["fan_in", "2:4", "block:4x4", "unit"])
def test_sparse_init_variance_follows_each_units_fan_in_under_a_pattern(pat: str) -> None:
    """The sparsity-aware init gives every active weight variance gain2 / (its unit's active
    fan-in): one value per layer under fan_in and N:M, one per block row under blocks, and
    nothing for a unit switched off by ``unit``."""
    from sparseflow.sparsity import sparse_variance

    p = parse_pattern(pat)
    k = 16 * 32 // 2 if p.kind == "nm" else 16 * 32 // 4
    mask = random_pattern_mask((16, 32), k, p, torch.Generator().manual_seed(0))
    var = sparse_variance(mask)
    fan = mask.sum(dim=1)
    for r in range(16):
        want = 2.0 / max(1, int(fan[r]))
        assert torch.allclose(var[r][mask[r]], torch.full_like(var[r][mask[r]], want))
    active = var[mask]
    if p.kind in ("fan_in", "nm"):
        assert torch.allclose(active, active[0].expand_as(active))
    if p.kind == "unit":
        assert int((fan == 0).sum()) == 12 and int((fan == 32).sum()) == 4


def test_fan_in_violations_may_leave_empty_units_aside() -> None:
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    assert pattern_violations(mask, Pattern("fan_in")) == ["fan-in differs across units (0..2)"]
    assert pattern_violations(mask, Pattern("fan_in"), empty_units=True) == []
    mask[2, 3] = True
    assert pattern_violations(mask, Pattern("fan_in"), empty_units=True) == [
        "fan-in differs across units (2..3)"]
