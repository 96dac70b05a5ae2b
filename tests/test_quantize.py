"""The int8 image tower: attention rebuilt from plain linear layers computes what it did, and then
every linear layer of the tower (attention's too) runs in int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CONFIG
from tagwatch.config import ModelConfig
from tagwatch.model import load_model


@pytest.mark.parametrize("batch_first", [True, False])
def test_rebuilt_self_attention_computes_what_multihead_attention_did(batch_first: bool) -> None:
    import torch

    from tagwatch.quantize import LinearSelfAttention

    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(64, 4, batch_first=batch_first).eval()  # 4 heads: order counts
    x = torch.randn(3, 10, 64) if batch_first else torch.randn(10, 3, 64)
    mask = torch.zeros(10, 10)
    mask[:, 7:] = float("-inf")  # a mask as a text tower would pass one
    banned = torch.rand(3 * 4, 10, 10) > 0.7  # True masks out, one mask per sample and head
    banned[..., 0] = False  # every query keeps a key
    rebuilt = LinearSelfAttention(attention)
    with torch.inference_mode():
        for kwargs in ({}, {"attn_mask": mask}, {"attn_mask": mask < 0}, {"attn_mask": banned}):
            expected = attention(x, x, x, need_weights=False, **kwargs)[0]
            assert torch.allclose(rebuilt(x, x, x, need_weights=False, **kwargs)[0], expected, atol=1e-5)


def test_int8_tower_quantises_attention_too_and_keeps_vectors(tiny_checkpoint: Path) -> None:
    import torch

    from tagwatch.quantize import linear_attention

    tiny = ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint))
    exact = load_model(tiny)
    images = np.random.default_rng(1).standard_normal((4, 3, 64, 64)).astype(np.float32)
    before = exact.encode_images(images)
    assert linear_attention(exact._model.visual) == 2  # one per layer of tiny-clip's image tower
    assert np.abs(exact.encode_images(images) - before).max() < 1e-5

    int8 = load_model(ModelConfig(name=str(TINY_CONFIG), pretrained=str(tiny_checkpoint), precision="int8"))
    modules = list(int8._model.visual.modules())
    assert not [m for m in modules if type(m) in (torch.nn.Linear, torch.nn.MultiheadAttention)]
    quantised = [m for m in modules if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(quantised) == 2 * 4  # per layer: attention's qkv and out, the MLP's two
    assert (int8.encode_images(images) * before).sum(1).min() > 0.99
