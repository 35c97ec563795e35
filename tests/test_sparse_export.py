"""``sparseflow export``: a run's model as a compact sparse file, loaded back for sparse inference
with the dense model's outputs; sizes, the weights_only format, refusals and bad input."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from sparseflow.analysis.endpoints import dataset_for, resolve_endpoint
from sparseflow.cli import main
from sparseflow.config import load_config
from sparseflow.store.database import Store
from sparseflow.store.sparse_model import (
    FORMAT,
    SparseInferenceLinear,
    SparseModelError,
    load_sparse_model,
    model_architecture,
    save_sparse_model,
    sparse_model_info,
)
from sparseflow.training.run import execute

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")

DIGITS = ["dataset=digits", "model=lenet300", "method=static", "sparsity=0.95",
          "train.duration=6it", "train.batch_size=32", "data.heldout=32"]


def images(n: int = 256, classes: int = 3, seed: int = 0):
    """1x16x16 Gaussian blobs as a sparseflow Dataset (LeNet5 needs at least 16x16 inputs)."""
    from sparseflow.data import Dataset

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 1, 16, 16, generator=g)

    def draw(m: int):
        y = torch.randint(0, classes, (m,), generator=g)
        return centres[y] + torch.randn(m, 1, 16, 16, generator=g), y

    x_train, y_train = draw(n)
    x_test, y_test = draw(64)
    return Dataset(name="images", x_train=x_train, y_train=y_train, x_test=x_test,
                   y_test=y_test, heldout=[], num_classes=classes, input_shape=(1, 16, 16))


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train(root, sets):
    s = execute(load_config(None, sets), root=root, progress=False)
    assert s["status"] == "finished"
    return s["run_id"]


def endpoint(root, spec):
    cache: dict = {}
    with Store(root / "sparseflow.db", readonly=True) as st:
        ep = resolve_endpoint(spec, st, cache)
    return ep, dataset_for(ep.config, cache)


def same_outputs(root, spec, path, atol=1e-5):
    """The sparse model's logits on test inputs against the dense model's of ``spec``."""
    ep, data = endpoint(root, spec)
    sparse = load_sparse_model(path)
    x = data.x_test[:64]
    with torch.no_grad():
        want, got = ep.model.eval()(x), sparse(x)
    torch.testing.assert_close(got, want, atol=atol, rtol=0)
    return ep, sparse


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export") / "store"
    return root, train(root, DIGITS)


def test_export_cli_loads_and_reproduces_the_dense_outputs(digits_run, tmp_path, capsys):
    root, rid = digits_run
    out = tmp_path / "m.sfm"
    code, stdout, err = cli(capsys, "export", rid[:6], "--root", root, "--out", out)
    assert code == 0, err
    assert str(out) in stdout and "vs dense state dict" in stdout
    assert "hidden.0.linear.weight" in stdout and "density 0.0" in stdout
    ep, model = same_outputs(root, rid, out)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(isinstance(m, SparseInferenceLinear) and m.is_sparse
                           for m in linears)
    # the state dict is the dense one again: it loads into the plain model
    dense = ep.model.state_dict()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, dense[k], atol=0, rtol=0)


def test_file_is_plain_torch_with_csr_int32_and_the_expected_size(digits_run, tmp_path, capsys):
    root, rid = digits_run
    out = tmp_path / "m.pt"
    assert cli(capsys, "export", rid, "--root", root, "--out", out, "--step", "final")[0] == 0
    obj = torch.load(out, weights_only=True)
    assert obj["format"] == FORMAT and obj["version"] == 1
    assert obj["model"]["name"] == "lenet300" and obj["model"]["num_classes"] == 10
    assert obj["model"]["input_shape"] == [1, 8, 8] and obj["source"]["run_id"] == rid
    ep, _ = endpoint(root, rid)
    state = ep.model.state_dict()
    assert set(obj["sparse"]) == set(ep.masks)  # every sparsified Linear, nothing else
    assert set(obj["dense"]) == set(state) - set(ep.masks)
    expected = 0
    for name, entry in obj["sparse"].items():
        out_f, in_f = state[name].shape
        nnz = int(ep.masks[name].sum())
        assert entry["crow_indices"].dtype == torch.int32 == entry["col_indices"].dtype
        assert entry["values"].dtype == torch.float32 and entry["values"].numel() == nnz
        assert entry["crow_indices"].numel() == out_f + 1
        expected += nnz * 4 + nnz * 4 + (out_f + 1) * 4  # values + col + crow
    expected += sum(t.numel() * t.element_size() for t in obj["dense"].values())
    size = out.stat().st_size
    assert expected <= size <= expected + 16 * 1024  # the zip/pickle container's overhead
    dense_file = tmp_path / "dense.pt"
    torch.save(state, dense_file)
    assert size < 0.3 * dense_file.stat().st_size  # 95% sparse: about 2 x 5% + biases

    info = sparse_model_info(out)
    assert info["file_bytes"] == size
    assert info["dense_bytes"] == sum(t.numel() * t.element_size() for t in state.values())
    by_name = {r["name"]: r for r in info["layers"]}
    for name, m in ep.masks.items():
        assert by_name[name]["format"] == "csr" and by_name[name]["nnz"] == int(m.sum())
        assert by_name[name]["density"] == pytest.approx(m.float().mean().item())


def test_half_precision_values(digits_run, tmp_path, capsys):
    root, rid = digits_run
    full, half = tmp_path / "f32.pt", tmp_path / "f16.pt"
    assert cli(capsys, "export", rid, "--root", root, "--out", full)[0] == 0
    assert cli(capsys, "export", rid, "--root", root, "--out", half, "--dtype", "float16")[0] == 0
    obj = torch.load(half, weights_only=True)
    assert all(e["values"].dtype == torch.float16 for e in obj["sparse"].values())
    assert half.stat().st_size < full.stat().st_size
    model = load_sparse_model(half)
    assert all(m.weight.dtype == torch.float32 for m in model.modules()
               if isinstance(m, nn.Linear))  # computes in the model's dtype
    same_outputs(root, rid, half, atol=1e-2)


def test_refuses_to_overwrite_unless_forced(digits_run, tmp_path, capsys):
    root, rid = digits_run
    out = tmp_path / "m.pt"
    out.write_bytes(b"keep me")
    code, stdout, err = cli(capsys, "export", rid, "--root", root, "--out", out)
    assert code == 2 and stdout == "" and str(out) in err and "exists" in err
    assert len(err.strip().splitlines()) == 1 and out.read_bytes() == b"keep me"
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(SparseModelError, match="exists"):
        save_sparse_model(nn.Linear(2, 2), out, arch={"name": "mlp"})
    assert cli(capsys, "export", rid, "--root", root, "--out", out, "--force")[0] == 0
    same_outputs(root, rid, out)


def test_default_output_name_in_the_current_folder(digits_run, tmp_path, capsys, monkeypatch):
    root, rid = digits_run
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = cli(capsys, "export", rid[:8], "--root", root)
    files = list(tmp_path.glob("*.sparse.pt"))
    assert code == 0 and len(files) == 1 and files[0].name.startswith(f"{rid}-step")
    assert files[0].name in stdout


@pytest.mark.parametrize("argv, fragment", [
    (["deadbeef"], "run 'deadbeef' not found"),
    (["RUN", "--step", "99999"], "no checkpoint at step 99999"),
    (["RUN", "--step", "soon"], "--step"),
    (["RUN", "--dtype", "int8"], "--dtype"),
    (["RUN@0", "--step", "1"], "RUN"),
])
def test_bad_input_one_line_exit_2_nothing_written(digits_run, tmp_path, capsys, argv,
                                                   fragment):
    root, rid = digits_run
    out = tmp_path / "m.pt"
    argv = [a.replace("RUN", rid) for a in argv]
    code, stdout, err = cli(capsys, "export", *argv, "--root", root, "--out", out)
    assert code == 2 and stdout == "" and fragment in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_run_without_checkpoint_and_missing_store(digits_run, tmp_path, capsys):
    root, rid = digits_run
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "runs" / rid / "checkpoints")
    out = tmp_path / "m.pt"
    code, _, err = cli(capsys, "export", rid, "--root", copy, "--out", out)
    assert code == 2 and f"run {rid} has no checkpoints" in err and not out.exists()
    code, _, err = cli(capsys, "export", rid, "--root", tmp_path / "nowhere", "--out", out)
    assert code == 2 and "no run store" in err and not out.exists()


def test_not_a_sparse_model_file(digits_run, tmp_path):
    root, rid = digits_run
    ep, data = endpoint(root, rid)
    with pytest.raises(SparseModelError, match="not a sparse model file"):
        load_sparse_model(ep.checkpoint)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(SparseModelError, match=r"bad\.pt: not a sparse model file"):
        sparse_model_info(bad)
    good = tmp_path / "good.pt"
    arch = model_architecture(ep.config, data.input_shape, data.num_classes)
    save_sparse_model(ep.model, good, arch=arch, masks=ep.masks)
    obj = torch.load(good, weights_only=True)
    name = next(iter(obj["sparse"]))
    obj["sparse"][name]["col_indices"][0] = 10**6
    torch.save(obj, bad)
    with pytest.raises(SparseModelError, match=f"layer '{name}' is not a valid CSR matrix"):
        load_sparse_model(bad)
    obj = torch.load(good, weights_only=True)
    torch.save({**obj, "version": 99}, bad)
    with pytest.raises(SparseModelError, match="version 99 is newer"):
        load_sparse_model(bad)


def test_lenet5_conv_stays_dense_and_outputs_match(tmp_path, capsys):
    root = tmp_path / "store"
    rid = train(root, ["dataset=test_sparse_export:images", "model=lenet5", "method=static",
                       "sparsity=0.9", "train.duration=4it", "train.batch_size=32",
                       "data.heldout=32", "arch.batchnorm=true"])
    out = tmp_path / "lenet5.pt"
    code, stdout, err = cli(capsys, "export", rid, "--root", root, "--out", out)
    assert code == 0, err
    obj = torch.load(out, weights_only=True)
    assert {"conv1.weight", "conv2.weight", "bn1.running_var"} <= set(obj["dense"])
    assert {"fc1.weight", "fc2.weight"} <= set(obj["sparse"])
    ep, model = same_outputs(root, rid, out)
    assert float((ep.model.conv2.weight == 0).float().mean()) > 0.5  # sparse, still dense
    assert isinstance(model.conv2, nn.Conv2d) and isinstance(model.fc1, SparseInferenceLinear)
    info = {r["name"]: r for r in sparse_model_info(out)["layers"]}
    assert info["conv2.weight"]["format"] == "dense" and info["fc1.weight"]["format"] == "csr"
    assert "conv2.weight  dense" in stdout


def test_model_of_ones_own_and_narrowed_small_dense(tmp_path, capsys):
    root = tmp_path / "store"
    own = train(root, ["dataset=digits", "model=own_models:tiny", "model_args.hidden=24",
                       "method=set", "sparsity=0.8", "train.duration=4it",
                       "train.batch_size=32", "data.heldout=32", "sparse.update_every=2"])
    out = tmp_path / "own.pt"
    assert cli(capsys, "export", own, "--root", root, "--out", out)[0] == 0
    assert torch.load(out, weights_only=True)["model"]["model_args"] == {"hidden": 24}
    same_outputs(root, own, out)
    small = train(root, [*DIGITS[:2], "method=small_dense", "sparsity=0.9",
                         "train.duration=4it", "train.batch_size=32", "data.heldout=32"])
    out = tmp_path / "small.pt"
    assert cli(capsys, "export", small, "--root", root, "--out", out)[0] == 0
    widths = torch.load(out, weights_only=True)["model"]["options"]["widths"]
    assert widths is not None and widths[0] < 300  # the narrowed model, rebuilt as trained
    same_outputs(root, small, out)


def test_python_api_on_a_plain_model_and_device_moves(tmp_path):
    from sparseflow.models import build_model

    torch.manual_seed(0)
    model = build_model("lenet300", (1, 8, 8), 10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(torch.rand_like(m.weight) < 0.1)
    arch = {"name": "lenet300", "input_shape": [1, 8, 8], "num_classes": 10,
            "options": {}, "model_args": {}}
    info = save_sparse_model(model, tmp_path / "m.pt", arch=arch)
    assert {r["format"] for r in info["layers"]} == {"csr"}
    loaded = load_sparse_model(tmp_path / "m.pt").to("cpu")
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=0)
    with pytest.raises(SparseModelError, match="does not match"):
        save_sparse_model(model, tmp_path / "n.pt", arch={**arch, "input_shape": [1, 9, 9]})
    assert not (tmp_path / "n.pt").exists()


def test_model_in_sparse_execution_with_its_mask_set(tmp_path):
    import torch.nn.functional as F

    import sparseflow
    from sparseflow.sparsity import CSRLinear

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = sparseflow.static(model, opt, sparsity=0.9, execution="sparse")
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert isinstance(model[1], CSRLinear) and model[1].is_sparse
    with torch.no_grad():
        model[1].weight[0] = 0.0  # an active weight that is zero: stored, as the mask says
    arch = {"name": "own_models:tiny", "input_shape": [1, 8, 8], "num_classes": 10,
            "model_args": {"hidden": 48}}
    info = save_sparse_model(model, tmp_path / "m.pt", arch=arch, masks=sp.masks)
    nnz = {r["name"]: r["nnz"] for r in info["layers"]}
    assert nnz == {n: int(sp.masks[n].sum()) for n in sp.params}
    loaded = load_sparse_model(tmp_path / "m.pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=0)
