import torch


def assert_agrees_with_plaintext(result, tolerance: float, min_agreement: float = 0.95) -> None:
    """Private logits within `tolerance` of plaintext, and argmax equal wherever the error cannot explain a flip.

    A flip needs two logits to cross, which a per-logit error of e can do only where plaintext's top-2
    margin is at most 2e; which near-ties exist depends on the CPU the model was trained on.
    """
    assert result.max_abs_error < tolerance, (result.name, result.max_abs_error)
    top2 = result.plain_logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    flipped = result.logits.argmax(1) != result.plain_logits.argmax(1)
    unexplained = flipped & (margin > 2 * result.max_abs_error)
    assert not unexplained.any(), (result.name, margin[flipped].tolist(), result.max_abs_error)
    assert result.argmax_agreement >= min_agreement, (result.name, result.argmax_agreement)
    assert torch.isfinite(result.logits).all(), result.name
