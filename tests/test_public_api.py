"""The public Python API: real signatures, documented parameters, t_end / total_steps, and
one-line errors that name the call the user made."""

from __future__ import annotations

import inspect
import re
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseflow

FACTORY_NAMES = ["static", "set_training", "rigl", "rigl_inverted", "gradual", "oneshot",
                 "snip", "grasp", "synflow"]
CLASSES = ["Sparsifier", "SET", "RigL", "RigLInverted", "GradualPruning", "OneShotPruning"]
COMMON = ["sparsity", "distribution", "include", "exclude", "dense_first", "dense_last", "init",
          "init_opts", "masking", "seed"]


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def fresh(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = mlp(seed)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def documented(doc: str) -> set[str]:
    """Parameter names of a numpy-style "Parameters" section (``a, b : type`` lines too)."""
    section = doc.split("Parameters\n", 1)[1]
    section = re.split(r"\n\s*(Returns|Raises|Notes|Examples)\n", section)[0]
    names: set[str] = set()
    for line in section.splitlines():
        m = re.match(r"^\s{0,4}(\*{0,2}[A-Za-z_][\w, ]*?)(\s:|$)", line)
        if m and not line.startswith(" " * 8):
            names |= {n.strip().lstrip("*") for n in m.group(1).split(",") if n.strip()}
    return names


# --- signatures and docstrings ---------------------------------------------------------------
@pytest.mark.parametrize("name", FACTORY_NAMES + CLASSES)
def test_signature_lists_every_parameter_with_type_and_default(name):
    obj = getattr(sparseflow, name)
    params = inspect.signature(obj).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), name
    assert not any(p.kind is p.VAR_POSITIONAL for p in params.values()), name
    assert list(params)[:2] == ["model", "optimizer"]
    for p in list(params.values())[2:]:
        assert p.kind is p.KEYWORD_ONLY, (name, p.name)
        assert p.annotation is not p.empty, (name, p.name)
    assert set(COMMON) <= set(params), set(COMMON) - set(params)
    doc = inspect.getdoc(obj)
    assert doc and "Parameters\n----------" in doc
    missing = set(params) - documented(doc)
    assert not missing, (name, missing)


def test_factories_and_classes_keep_their_own_options():
    sig = {n: set(inspect.signature(getattr(sparseflow, n)).parameters) for n in
           FACTORY_NAMES + CLASSES}
    for n in ("set_training", "rigl", "rigl_inverted", "SET", "RigL", "RigLInverted"):
        assert {"t_end", "total_steps", "update_every", "drop_fraction", "drop_schedule",
                "exclude_dropped"} <= sig[n], n
    assert "grad_fn" in sig["rigl"] and "grad_fn" in sig["RigL"] and "grad_fn" not in sig["SET"]
    assert {"t_begin", "t_end", "every", "initial_sparsity", "scope"} <= sig["gradual"]
    assert {"t_prune", "scope"} <= sig["oneshot"] and "t_prune" in sig["OneShotPruning"]
    assert "batch" in sig["snip"] and "batch" in sig["grasp"] and "x" not in sig["snip"]
    assert {"input_shape", "iterations"} <= sig["synflow"]
    assert "masks" in sig["static"] and "masks" not in sig["snip"]


def test_sparsify_forwards_and_documents_it():
    params = inspect.signature(sparseflow.sparsify).parameters
    assert [p.kind for p in params.values()][-1] is inspect.Parameter.VAR_KEYWORD
    doc = inspect.getdoc(sparseflow.sparsify)
    assert "forward" in doc.lower() and "Parameters" in doc and "Raises" in doc
    with pytest.raises(ValueError, match="unknown 'dense'; valid: ") as err:
        sparseflow.sparsify("dense", *fresh())
    valid = set(str(err.value).rsplit("valid: ", 1)[1].split(", "))
    assert valid == {"static", "set", "rigl", "rigl_inverted", "gradual", "oneshot", "snip",
                     "grasp", "synflow", "srigl", "granet", "acdc", "ste", "sr_ste", "topkast",
                     "mest", "snfs"}


# --- t_end and total_steps -----------------------------------------------------------------
def last_update_step(factory, total_steps: int, **kwargs) -> int:
    """Train ``total_steps`` steps; the last step at which the mask actually changed."""
    model, opt = fresh()
    sp = factory(model, opt, total_steps=total_steps, update_every=1, drop_fraction=0.5,
                 drop_schedule="constant", exclude_dropped=True, sparsity=0.5, **kwargs)
    last, g = 0, torch.Generator().manual_seed(2)
    for t in range(1, total_steps + 1):
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        before = {n: m.clone() for n, m in sp.masks.masks.items()}
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
        if any(not torch.equal(before[n], m) for n, m in sp.masks.masks.items()):
            last = t
    return last


@pytest.mark.parametrize("total_steps", [1, 4, 10, 12, 14])
@pytest.mark.parametrize("factory", [sparseflow.set_training, sparseflow.rigl,
                                     sparseflow.RigLInverted])
def test_total_steps_puts_the_last_update_at_75_percent(factory, total_steps):
    # the paper's T_end = 0.75 T as a step: nearest step (halves to even, as the run config
    # rounds step fractions), at least 1
    want = max(1, round(Fraction(3, 4) * total_steps))
    assert last_update_step(factory, total_steps) == want


def test_t_end_wins_over_total_steps():
    model, opt = fresh()
    sp = sparseflow.rigl(model, opt, t_end=3, total_steps=100, sparsity=0.5)
    assert sp.t_end == 3


@pytest.mark.parametrize("call, make", [
    ("rigl()", lambda m, o: sparseflow.rigl(m, o, sparsity=0.5)),
    ("set_training()", lambda m, o: sparseflow.set_training(m, o, sparsity=0.5)),
    ("rigl_inverted()", lambda m, o: sparseflow.rigl_inverted(m, o, sparsity=0.5)),
    ("RigL()", lambda m, o: sparseflow.RigL(m, o, sparsity=0.5)),
    ("sparsify('rigl')", lambda m, o: sparseflow.sparsify("rigl", m, o, sparsity=0.5)),
])
def test_missing_t_end_says_what_to_pass(call, make):
    with pytest.raises(ValueError) as e:
        make(*fresh())
    assert str(e.value) == (f"{call}: pass t_end= (the step of the last mask update) or "
                            "total_steps= (t_end is then 75% of it)")


@pytest.mark.parametrize("kwargs, field", [({"t_end": 0}, "t_end"), ({"t_end": 0.75}, "t_end"),
                                           ({"t_end": True}, "t_end"),
                                           ({"total_steps": 0}, "total_steps"),
                                           ({"total_steps": 2.5}, "total_steps")])
def test_steps_must_be_positive_ints(kwargs, field):
    with pytest.raises(ValueError) as e:
        sparseflow.rigl(*fresh(), sparsity=0.5, **kwargs)
    msg = str(e.value)
    assert msg.startswith(f"rigl(): {field}: ") and "int >= 1" in msg and "\n" not in msg


def test_readme_call_still_works():
    model, opt = fresh()
    sp = sparseflow.rigl(model, opt, sparsity=0.9, distribution="erk", t_end=5000)
    assert sp.t_end == 5000 and isinstance(sp, sparseflow.RigL)


# --- errors name the call ---------------------------------------------------------------
@pytest.mark.parametrize("call, make, field", [
    ("rigl()", lambda m, o: sparseflow.rigl(m, o, t_end=5, drop_fraction=1.5), "drop_fraction"),
    ("RigL()", lambda m, o: sparseflow.RigL(m, o, t_end=5, drop_fraction=1.5), "drop_fraction"),
    ("RigLInverted()", lambda m, o: sparseflow.RigLInverted(m, o, t_end=5, update_every=0),
     "update_every"),
    ("SET()", lambda m, o: sparseflow.SET(m, o, t_end=5, drop_schedule="linear"),
     "drop_schedule"),
    ("set_training()", lambda m, o: sparseflow.set_training(m, o, t_end=5, sparsity=1.0),
     "sparsity"),
    ("sparsify('rigl')", lambda m, o: sparseflow.sparsify("rigl", m, o, t_end=5,
                                                          drop_fraction=-1), "drop_fraction"),
    ("static()", lambda m, o: sparseflow.static(m, o, init="xavier"), "init"),
    ("Sparsifier()", lambda m, o: sparseflow.Sparsifier(m, o, masking="never"), "masking"),
    ("gradual()", lambda m, o: sparseflow.gradual(m, o, sparsity=0.5, t_begin=1, t_end=5,
                                                  every=0), "every"),
    ("GradualPruning()", lambda m, o: sparseflow.GradualPruning(m, o, sparsity=0.5, t_begin=1,
                                                                t_end=5, scope="block"),
     "scope"),
    ("oneshot()", lambda m, o: sparseflow.oneshot(m, o, sparsity=0.5, t_prune=3,
                                                  distribution="nope"), "distribution"),
    ("OneShotPruning()", lambda m, o: sparseflow.OneShotPruning(m, o, sparsity=1.5, t_prune=3),
     "sparsity"),
    ("sparsify('static')", lambda m, o: sparseflow.sparsify("static", m, o, sparsity=2.0),
     "sparsity"),
])
def test_errors_start_with_the_call_and_name_the_argument(call, make, field):
    with pytest.raises(ValueError) as e:
        make(*fresh())
    msg = str(e.value)
    assert msg.startswith(f"{call}: {field}: "), msg
    assert "\n" not in msg


def test_errors_from_below_are_named_too():
    """A ValueError of a lower layer (here: bad mask shapes) also carries the call."""
    model, opt = fresh()
    bad = {"0.weight": torch.ones(6, 12, dtype=torch.bool),
           "2.weight": torch.ones(3, 12, dtype=torch.bool)}
    with pytest.raises(ValueError) as e:
        sparseflow.rigl(model, opt, t_end=5, masks=bad)
    msg = str(e.value)
    assert msg.startswith("rigl(): masks: ") and "'0.weight'" in msg
    assert "(6, 12)" in msg and "(12, 6)" in msg and "\n" not in msg


def test_sparsify_names_a_bad_option_and_the_valid_ones():
    with pytest.raises(ValueError) as e:
        sparseflow.sparsify("rigl", *fresh(), t_end=5, drop_frac=0.3)
    msg = str(e.value)
    assert msg.startswith("sparsify('rigl'): ") and "'drop_frac'" in msg and "\n" not in msg
    valid = msg.split("valid: ", 1)[1].split(", ")
    assert valid == [p for p in inspect.signature(sparseflow.rigl).parameters
                     if p not in ("model", "optimizer")]
    with pytest.raises(ValueError) as e:
        sparseflow.sparsify("gradual", *fresh(), sparsity=0.5, t_begin=1, t_end=4,
                            drop_fraction=0.3)
    assert "'drop_fraction'" in str(e.value) and "t_begin" in str(e.value)
    with pytest.raises(ValueError) as e:
        sparseflow.sparsify("rigl2", *fresh())
    assert str(e.value).startswith("sparsify('rigl2'): method: unknown 'rigl2'; valid: static")


def test_a_misspelt_keyword_of_a_factory_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"rigl\(\) got an unexpected keyword argument 'tend'"):
        sparseflow.rigl(*fresh(), tend=5)


# --- meta device --------------------------------------------------------------------------
@pytest.mark.parametrize("call, make", [
    ("rigl()", lambda m, o: sparseflow.rigl(m, o, t_end=5)),
    ("static()", lambda m, o: sparseflow.static(m, o)),
    ("Sparsifier()", lambda m, o: sparseflow.Sparsifier(m, o)),
    ("sparsify('set')", lambda m, o: sparseflow.sparsify("set", m, o, total_steps=10)),
])
def test_a_model_on_the_meta_device_is_refused(call, make):
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError) as e:
        make(model, opt)
    assert str(e.value) == (
        f"{call}: model parameter '0.weight' is on the meta device; materialise the model "
        "first (model.to_empty(device=...) and initialise it)"
    )


# --- pruning at init: the batch -----------------------------------------------------------
@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_snip_and_grasp_take_the_batch_as_batch(method):
    x, y = batch()
    with pytest.raises(ValueError) as e:
        sparseflow.sparsify(method, *fresh(), x=x, y=y)
    msg = str(e.value)
    assert "batch=(x, y)" in msg and "'x'" in msg and "pass x=" not in msg and "\n" not in msg
    with pytest.raises(ValueError) as e:
        sparseflow.sparsify(method, *fresh())
    assert str(e.value).startswith(f"sparsify('{method}'): ") and "batch=(x, y)" in str(e.value)
    with pytest.raises(ValueError) as e:
        getattr(sparseflow, method)(*fresh())
    assert str(e.value).startswith(f"{method}(): ") and "batch=(x, y)" in str(e.value)
    model, opt = fresh()
    sp = sparseflow.sparsify(method, model, opt, batch=(x, y), sparsity=0.75)
    total = sum(p.numel() for p in sp.params.values())
    assert sum(sp.masks.nnz().values()) == round(Fraction(1, 4) * total)  # global scope
    assert sp.name == method


def test_synflow_needs_only_the_input_shape():
    with pytest.raises(ValueError) as e:
        sparseflow.synflow(*fresh())
    assert str(e.value).startswith("synflow(): ") and "input_shape" in str(e.value)
    model, opt = fresh()
    sp = sparseflow.synflow(model, opt, input_shape=(6,), iterations=5, sparsity=0.5)
    assert sum(sp.masks.nnz().values()) == (6 * 12 + 12 * 3) // 2
