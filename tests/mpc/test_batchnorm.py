"""Private inference of BatchNorm models: both parties share the folded BatchNorm tensors in the same order, every session.

Each party caches the model owner's shares; a cache keyed by something that can differ between the two
processes (a temporary tensor's id, reused in one process only) lets one party skip a sharing the other
performs, and from then on the parties combine unrelated shares: logits of ~1e14 instead of ~10.
"""

import torch
from torch import nn

from mpc import private_inference_many
from secsuite.model import Classifier
from tests.mpc.agreement import assert_agrees_with_plaintext

SHAPE = (1, 8, 8)
TOLERANCE = 1e-2  # 16-bit fixed point through conv, folded BatchNorm, ReLU and pooling: observed <= 3e-3
SESSIONS = 2


def _with_statistics(net: nn.Sequential, name: str, images: torch.Tensor) -> Classifier:
    """The net with non-trivial BatchNorm affine weights and running statistics of a pass over real digits."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: the statistics of exactly this pass
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    classifier = Classifier(net, 10, SHAPE, mean=[0.3], std=[0.4], name=name).train()
    with torch.no_grad():
        classifier(images)
    return classifier.eval()


def batchnorm_models(images: torch.Tensor) -> list[Classifier]:
    torch.manual_seed(0)
    after_conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                               nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    on_input = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(64, 10))
    between_activations = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2),
                                        nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 10))
    return [_with_statistics(net, name, images) for net, name in
            ((after_conv, "conv-bn"), (on_input, "input-bn"), (between_activations, "relu-bn-pool-bn"))]


def test_batchnorm_models_agree_with_plaintext_in_repeated_sessions(digits):
    models = batchnorm_models(digits.train.x[:256])
    x = digits.test.x[:8]
    for _ in range(SESSIONS):
        for result in private_inference_many(models, x):
            assert_agrees_with_plaintext(result, TOLERANCE)
