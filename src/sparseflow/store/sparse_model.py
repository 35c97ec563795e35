"""Sparse model files: a trained model in one compact file, loaded back for sparse inference.

``sparseflow export RUN`` writes one file with ``torch.save`` of plain containers only, so
``torch.load(path, weights_only=True)`` opens it anywhere::

    {"format": "sparseflow-sparse-model", "version": 1,
     "model": {"name": "lenet300", "input_shape": [1, 28, 28], "num_classes": 10,
               "options": {"widths": None, "depth": None, ...},   # build_model keywords
               "model_args": {}},                                  # a model of your own
     "values_dtype": "float32",
     "source": {"run_id": ..., "step": ..., ...},                  # where it came from
     "sparse": {"hidden.0.linear.weight": {"shape": [300, 784], "dtype": "float32",
                "crow_indices": int32/int64 [out + 1], "col_indices": int32/int64 [nnz],
                "values": [nnz]}, ...},
     "dense": {name: tensor, ...},                                 # the rest of the state dict
     "order": [state dict names in order]}

Every ``nn.Linear`` weight with zeros (not shared with another module) is held in compressed
sparse rows (indices int32 when they fit, values in ``values_dtype``); every other tensor of the
state dict (biases, convolutions, BatchNorm buffers) is dense as the model had it. ``model`` is
what ``build_model`` (or ``package.module:function``) needs to rebuild the architecture, as
the run config gives it (with the narrowed widths of ``small_dense``).

:func:`load_sparse_model` rebuilds the model, loads the dense tensors and turns each sparse
Linear into a :class:`SparseInferenceLinear` (a
:class:`~sparseflow.sparsity.execution.CSRLinear` held on its values, forward
``torch.sparse.mm``), in eval mode with gradients off.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseflow.config import Config
from sparseflow.errors import UserError
from sparseflow.factories import is_reference, load_factory
from sparseflow.models.registry import build_model, with_widths
from sparseflow.sparsity.checks import check_masks
from sparseflow.sparsity.csr import CSRPattern
from sparseflow.sparsity.execution import CSRLinear, linear_layers
from sparseflow.store.checkpoint import load_plain, read_bytes, write_synced

FORMAT = "sparseflow-sparse-model"
VERSION = 1
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                  "bfloat16": torch.bfloat16}
INT32_MAX = 2**31 - 1


class SparseModelError(UserError):
    """A sparse model file cannot be written or read: one line naming the file."""


class SparseInferenceLinear(CSRLinear):
    """A Linear layer held as its CSR non-zero values for inference: y = x W^T + b with
    ``torch.sparse.mm``. Moving the module (``.to``/``.cuda``) moves its pattern too;
    ``state_dict()`` gives the dense weight, as for every CSRLinear."""

    @classmethod
    def from_csr(cls, module: nn.Linear, pattern: CSRPattern, values: torch.Tensor
                 ) -> SparseInferenceLinear:
        """Turn ``module`` (exactly an ``nn.Linear``) into this class in place, its weight
        being ``values`` (row-major non-zeros of W at ``pattern``) on the module's device."""
        layer = cls.convert_(module)
        assert isinstance(layer, SparseInferenceLinear)
        layer.hold_values_(pattern, values)
        return layer

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> nn.Module:
        out = super()._apply(fn, *args, **kwargs)
        if getattr(self, "csr", None) is not None:
            self.csr = self.csr.to(self.weight.device)
        return out


# -- architecture ---------------------------------------------------------------------------
def model_architecture(cfg: Config, input_shape: Sequence[int], num_classes: int,
                       widths: Sequence[int] | None = None) -> dict[str, Any]:
    """The ``model`` entry of a sparse model file for a run's config: the model name, input
    shape, number of classes and the constructor arguments ``make_model`` passes (``widths``:
    the narrowed hidden widths of a ``small_dense`` run)."""
    a = cfg.arch
    options: dict[str, Any] = {"widths": None if a.widths is None else list(a.widths),
                               "depth": a.depth, "width": a.width, "activation": a.activation,
                               "batchnorm": a.batchnorm, "skip": a.skip}
    if widths is not None:
        options = with_widths(options, [int(w) for w in widths])
    return {"name": cfg.model, "input_shape": [int(s) for s in input_shape],
            "num_classes": int(num_classes), "options": options,
            "model_args": dict(cfg.model_args)}


def build_architecture(arch: Mapping[str, Any]) -> nn.Module:
    """The model a ``model`` entry names, with fresh weights (the global RNG is left as it
    was); a registered name goes through ``build_model``, ``package.module:function``
    through the factory with ``model_args``."""
    try:
        name, shape = str(arch["name"]), tuple(int(s) for s in arch["input_shape"])
        classes = int(arch["num_classes"])
    except (KeyError, TypeError, ValueError):
        raise SparseModelError("model: the architecture entry needs name, input_shape (ints) "
                               f"and num_classes, got {dict(arch)!r}"[:300]) from None
    with torch.random.fork_rng(devices=[]):
        if not is_reference(name):
            try:
                return build_model(name, shape, classes, **dict(arch.get("options") or {}))
            except TypeError as e:  # an option build_model does not take
                raise SparseModelError(f"model: {name}: bad options ({e})") from None
        factory = load_factory(name, "model")
        kwargs = dict(arch.get("model_args") or {})
        try:
            model = factory(shape, classes, **kwargs)
        except Exception as e:  # noqa: BLE001 - the user's factory: report, do not trace back
            raise SparseModelError(f"model: {name}{shape, classes} failed ({type(e).__name__}: "
                                   f"{' '.join(str(e).split())})") from None
    if not isinstance(model, nn.Module):
        raise SparseModelError(f"model: {name} returned {type(model).__name__}, expected an "
                               "nn.Module")
    return model


# -- writing --------------------------------------------------------------------------------
def _index_dtype(nnz: int, shape: tuple[int, int]) -> torch.dtype:
    return torch.int32 if max(nnz, shape[1]) <= INT32_MAX else torch.int64


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_synced(tmp, payload)
        os.replace(tmp, path)
    except OSError as e:
        raise SparseModelError(f"{path}: cannot write ({e.strerror or type(e).__name__})"
                               ) from None
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def check_writable(path: str | Path, force: bool = False) -> Path:
    """``path`` as a Path, after refusing an existing file unless ``force`` (one line naming
    the file); nothing is written."""
    path = Path(path)
    if path.is_dir():
        raise SparseModelError(f"{path}: is a folder, expected a file")
    if path.exists() and not force:
        raise SparseModelError(f"{path}: file exists (pass --force / force=True to overwrite)")
    return path


def sparse_payload(model: nn.Module, arch: Mapping[str, Any], *,
                   masks: Mapping[str, torch.Tensor] | None = None, dtype: str = "float32",
                   source: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The dict a sparse model file holds for ``model`` (see the module docstring).

    ``masks``: ``{weight name: bool mask}`` of a sparse run: its active entries are stored
    even where they are zero (entries outside the mask are stored too if non-zero, so the
    function is exact either way). Checks that ``arch`` rebuilds a model with the same
    state-dict names and shapes, so a file that cannot be loaded is never written.
    """
    if dtype not in DTYPES:
        raise SparseModelError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    state = model.state_dict()  # dense weights also for layers held sparse (CSRLinear)
    params = {n: state[n] for n, _ in model.named_parameters() if n in state}
    try:
        fitted = check_masks(masks, params, "masks", subset=True) if masks else {}
    except ValueError as e:
        raise SparseModelError(str(e)) from None
    skeleton = build_architecture(arch).state_dict()
    mismatch = sorted(set(state) ^ set(skeleton)) or [
        k for k in state if tuple(state[k].shape) != tuple(skeleton[k].shape)]
    if mismatch:
        raise SparseModelError(f"model: {arch['name']} rebuilt from its arguments does not "
                               f"match the model ({', '.join(mismatch[:3])}"
                               f"{' ...' if len(mismatch) > 3 else ''})")
    linears = linear_layers(model, {f"{n}.weight" if n else "weight": m.weight
                                    for n, m in model.named_modules()
                                    if isinstance(m, nn.Linear)})
    sparse: dict[str, Any] = {}
    dense: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        t = tensor.detach().cpu()
        keep = (t != 0) if name in linears and t.is_floating_point() else None
        if keep is not None and name in fitted:
            keep |= fitted[name].cpu()
        if keep is None or bool(keep.all()):
            dense[name] = t.clone()
            continue
        pattern = CSRPattern.from_mask(keep)
        shape = (int(t.shape[0]), int(t.shape[1]))
        ix = _index_dtype(pattern.nnz, shape)
        sparse[name] = {"shape": list(shape), "dtype": str(t.dtype).removeprefix("torch."),
                        "crow_indices": pattern.crow.to(ix), "col_indices": pattern.col.to(ix),
                        "values": pattern.gather(t).to(DTYPES[dtype]).clone()}
    return {"format": FORMAT, "version": VERSION, "model": _plain(dict(arch)),
            "values_dtype": dtype, "source": _plain(dict(source or {})),
            "order": list(state), "sparse": sparse, "dense": dense}


def _plain(obj: Any) -> Any:
    """``obj`` with tuples made lists (what a weights_only load gives back anyway)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def save_sparse_model(model: nn.Module, path: str | Path, *, arch: Mapping[str, Any],
                      masks: Mapping[str, torch.Tensor] | None = None, dtype: str = "float32",
                      force: bool = False, source: Mapping[str, Any] | None = None
                      ) -> dict[str, Any]:
    """Write ``model`` as a sparse model file at ``path`` (atomically: a temp file, then
    ``os.replace``) and return :func:`sparse_model_info` of it.

    ``arch``: the ``model`` entry (:func:`model_architecture` for a run); ``masks``: the run's
    masks (optional); ``dtype``: the stored dtype of the sparse values (``float32``,
    ``float16``, ``bfloat16``); ``source``: plain facts about where the model came from (run
    id, step). An existing file is refused unless ``force``.
    """
    path = check_writable(path, force)
    obj = sparse_payload(model, arch, masks=masks, dtype=dtype, source=source)
    buf = io.BytesIO()
    torch.save(obj, buf)
    check_writable(path, force)  # still not there (the payload may take a while)
    _write_atomic(path, buf.getvalue())
    return _info(obj, path)


# -- reading --------------------------------------------------------------------------------
def _read(path: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(path)
    data = read_bytes(path, "sparse model file", SparseModelError)
    obj = load_plain(data, path, error=SparseModelError, what="not a sparse model file")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise SparseModelError(f"{path}: not a sparse model file (no {FORMAT!r} format tag)")
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise SparseModelError(f"{path}: format version {version!r} is newer than this "
                               f"sparseflow reads ({VERSION}); upgrade sparseflow")
    for key in ("model", "sparse", "dense"):
        if not isinstance(obj.get(key), dict):
            raise SparseModelError(f"{path}: sparse model file has no {key!r} entry")
    return path, obj


def _pattern(path: Path, name: str, entry: Mapping[str, Any]) -> tuple[CSRPattern, torch.Tensor]:
    """The CSRPattern and values of one stored layer, after checking the CSR is well formed
    (sorted, unique, in range)."""
    try:
        out, inp = (int(s) for s in entry["shape"])
        crow = entry["crow_indices"].to(torch.int64)
        col = entry["col_indices"].to(torch.int64)
        values = entry["values"]
        nnz = int(col.numel())
        ok = (crow.dim() == 1 and crow.numel() == out + 1 and int(crow[0]) == 0
              and int(crow[-1]) == nnz and values.shape == (nnz,)
              and bool((crow[1:] >= crow[:-1]).all())
              and (nnz == 0 or (int(col.min()) >= 0 and int(col.max()) < inp)))
        if ok:
            rows = torch.repeat_interleave(torch.arange(out), crow.diff())
            index = rows * inp + col
            ok = bool((index[1:] > index[:-1]).all())
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError):
        ok = False
    if not ok:
        raise SparseModelError(f"{path}: layer {name!r} is not a valid CSR matrix")
    mask = torch.zeros(out * inp, dtype=torch.bool)
    mask[index] = True
    return CSRPattern.from_mask(mask.view(out, inp)), values


def load_sparse_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model in a sparse model file, ready for inference on ``device``: rebuilt from its
    architecture, dense tensors loaded, each stored sparse Linear a
    :class:`SparseInferenceLinear` (values in the layer's original dtype); eval mode,
    ``requires_grad`` off. Its outputs equal the dense model's up to float rounding."""
    path, obj = _read(path)
    try:
        model = build_architecture(obj["model"])
    except UserError as e:
        raise SparseModelError(f"{path}: cannot rebuild its model ({e})") from None
    sparse = obj["sparse"]
    own = model.state_dict()
    for name, entry in sparse.items():
        target = own.get(name)
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if target is None or not isinstance(shape, list) or tuple(target.shape) != tuple(shape):
            raise SparseModelError(f"{path}: layer {name!r} does not match the model "
                                   f"{obj['model'].get('name')!r} rebuilt from the file")
    try:
        missing, unexpected = model.load_state_dict(obj["dense"], strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise SparseModelError(f"{path}: tensors do not match the model ({first})") from None
    missing = sorted(set(missing) - set(sparse))
    if missing or unexpected:
        raise SparseModelError(f"{path}: tensors do not match the model (missing: "
                               f"{', '.join(missing[:3]) or '-'}; unexpected: "
                               f"{', '.join(list(unexpected)[:3]) or '-'})")
    model.to(device)
    layers = linear_layers(model, {n: p for n, p in model.named_parameters() if n in sparse})
    for name, entry in sparse.items():
        if name not in layers:
            raise SparseModelError(f"{path}: {name!r} is not the weight of an nn.Linear")
        pattern, values = _pattern(path, name, entry)
        SparseInferenceLinear.from_csr(layers[name], pattern, values)
    model.eval()
    model.requires_grad_(False)
    return model


# -- sizes ----------------------------------------------------------------------------------
def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _info(obj: Mapping[str, Any], path: Path) -> dict[str, Any]:
    layers: list[dict[str, Any]] = []
    dense_bytes = stored = 0
    for name, entry in obj["sparse"].items():
        out, inp = (int(s) for s in entry["shape"])
        nnz = int(entry["values"].numel())
        size = sum(_nbytes(entry[k]) for k in ("crow_indices", "col_indices", "values"))
        dtype = getattr(torch, str(entry.get("dtype")), None)
        full = out * inp * (dtype.itemsize if isinstance(dtype, torch.dtype) else 4)
        layers.append({"name": name, "shape": [out, inp], "format": "csr", "nnz": nnz,
                       "density": nnz / max(1, out * inp), "bytes": size, "dense_bytes": full})
        dense_bytes, stored = dense_bytes + full, stored + size
    for name, t in obj["dense"].items():
        dense_bytes, stored = dense_bytes + _nbytes(t), stored + _nbytes(t)
        if t.dim() >= 2:  # weights; biases and BatchNorm buffers only count in the totals
            nnz = int(torch.count_nonzero(t))
            layers.append({"name": name, "shape": list(t.shape), "format": "dense", "nnz": nnz,
                           "density": nnz / max(1, t.numel()), "bytes": _nbytes(t),
                           "dense_bytes": _nbytes(t)})
    order = {n: i for i, n in enumerate(obj.get("order") or [])}
    layers.sort(key=lambda r: order.get(r["name"], len(order)))
    return {"path": str(path), "format": obj["format"], "version": obj["version"],
            "model": dict(obj["model"]), "source": dict(obj.get("source") or {}),
            "values_dtype": obj.get("values_dtype"), "file_bytes": path.stat().st_size,
            "dense_bytes": dense_bytes, "tensor_bytes": stored, "layers": layers}


def sparse_model_info(path: str | Path) -> dict[str, Any]:
    """Sizes of a sparse model file: ``file_bytes``, ``dense_bytes`` (the dense state dict's
    tensors), ``tensor_bytes`` (the stored tensors) and per weight (``layers``: name, shape,
    ``csr`` or ``dense``, nnz, density, bytes stored, bytes dense), plus its model and
    source entries."""
    path, obj = _read(path)
    return _info(obj, path)


def info_text(info: Mapping[str, Any]) -> str:
    """Lines for the terminal: the file, its size against the dense state dict's, and each
    weight's format and density."""
    def size(n: int) -> str:
        return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"

    ratio = info["file_bytes"] / info["dense_bytes"] if info["dense_bytes"] else math.nan
    lines = [str(info["path"]),
             f"size: {size(info['file_bytes'])} ({info['file_bytes']} bytes) vs dense state "
             f"dict {size(info['dense_bytes'])} ({info['dense_bytes']} bytes): {ratio:.1%}, "
             f"values {info['values_dtype']}"]
    width = max((len(r["name"]) for r in info["layers"]), default=4)
    for r in info["layers"]:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"  {r['name']:<{width}}  {r['format']:<5}  {shape:>12}  "
                     f"density {r['density']:.4f}  nnz {r['nnz']}")
    return "\n".join(lines)
