"""select_weights: defaults, include/exclude patterns, dense first/last, errors."""

from __future__ import annotations

import pytest
from torch import nn

from sparseflow.sparsity import select_weights


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.c1d = nn.Conv1d(2, 2, 3)
        self.c3d = nn.Conv3d(1, 2, 2)
        self.emb = nn.Embedding(5, 3)
        self.head = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2))


def test_default_all_linear_conv_weights_in_model_order():
    names = list(select_weights(Net()))
    assert names == ["conv1.weight", "c1d.weight", "c3d.weight", "head.0.weight", "head.2.weight"]


def test_values_are_the_model_parameters():
    net = Net()
    sel = select_weights(net)
    assert sel["head.0.weight"] is net.head[0].weight


def test_dense_first_and_last():
    names = list(select_weights(Net(), dense_first=True, dense_last=True))
    assert names == ["c1d.weight", "c3d.weight", "head.0.weight"]


def test_include_patterns_and_module_names():
    net = Net()
    assert list(select_weights(net, include=["head.*.weight"])) == [
        "head.0.weight",
        "head.2.weight",
    ]
    assert list(select_weights(net, include=["conv1"])) == ["conv1.weight"]
    # include may name any >= 2-dim parameter, e.g. an embedding table
    assert list(select_weights(net, include=["emb.weight"])) == ["emb.weight"]


def test_exclude():
    names = list(select_weights(Net(), exclude=["c*d", "head.2"]))
    assert names == ["conv1.weight", "head.0.weight"]


def test_tied_weight_listed_once():
    a = nn.Linear(4, 4)
    model = nn.Sequential(a, nn.ReLU(), a)
    assert list(select_weights(model)) == ["0.weight"]


def test_errors_list_available_names():
    net = Net()
    with pytest.raises(ValueError, match=r"'fc9'.*head\.0\.weight"):
        select_weights(net, include=["fc9"])
    with pytest.raises(ValueError, match="exclude pattern 'nope'"):
        select_weights(net, exclude=["nope"])
    with pytest.raises(ValueError, match="no weight left"):
        select_weights(nn.Sequential(nn.Linear(2, 2)), dense_first=True)
    with pytest.raises(ValueError, match="no weight left"):
        select_weights(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError):
        select_weights(net, include="conv1")
