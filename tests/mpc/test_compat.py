"""Pins each CrypTen 0.4.1 / torch 2.x patch in mpc.compat."""

import sys

import torch
from torch import nn

from mpc import compat


def test_registration_alias_and_idempotent():
    crypten = compat.load_crypten()
    assert compat.load_crypten() is crypten
    alias = sys.modules["torch.onnx._internal.registration"]
    assert alias.__name__ == "torch.onnx._internal.torchscript_exporter.registration"


def test_export_forced_to_torchscript_and_identity_registered():
    compat.load_crypten()
    from crypten.nn import onnx_converter

    assert onnx_converter._export_pytorch_model._secsuite_patched
    assert "Identity" in onnx_converter.ONNX_TO_CRYPTEN


def test_without_dropout_replaces_nested_dropout():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5), nn.ReLU()))
    stripped = compat.without_dropout(model)
    assert isinstance(stripped[1][0], nn.Identity) and isinstance(model[1][0], nn.Dropout)


def test_from_pytorch_converts_cnn_with_identity_and_dropout(monkeypatch):
    # A single in-process party; crypten.init writes RENDEZVOUS/RANK/WORLD_SIZE into os.environ,
    # which would leak into later multi-party runs, so the environment is restored afterwards.
    for key in ("RENDEZVOUS", "RANK", "WORLD_SIZE", "DISTRIBUTED_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"RENDEZVOUS": "file:///tmp/secsuite-mpc-compat-test", "RANK": "0", "WORLD_SIZE": "1", "DISTRIBUTED_BACKEND": "gloo"}.items():
        monkeypatch.setenv(key, value)
    crypten = compat.load_crypten()
    crypten.init()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Dropout(0.2),
                          nn.Flatten(), nn.Identity(), nn.Linear(64, 10)).eval()
    x = torch.rand(3, 1, 8, 8)
    private = compat.from_pytorch(model, x[:1]).encrypt()
    error = (private(crypten.cryptensor(x)).get_plain_text() - model(x)).abs().max().item()
    crypten.uninit()
    assert error < 1e-2
