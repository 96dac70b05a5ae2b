"""The image tower in int8: every linear layer quantised dynamically, attention's included.

``torch.ao.quantization.quantize_dynamic`` only replaces ``nn.Linear`` modules, and
``nn.MultiheadAttention`` keeps its query/key/value projection as a bare weight (and its output
projection as a class the quantiser skips on purpose), so on a ViT it leaves a third of the linear
work in fp32.  Here each self-attention is first rebuilt from two plain ``nn.Linear`` and
``scaled_dot_product_attention`` (the same arithmetic: vectors equal to the original's to 1e-6 in
fp32), then quantised with the rest.  On the 2-core AVX2 test box this took ViT-B-32-256 from 15.6
(MLP only) to 21.6 img/s (fp32: 11.0), cosine to fp32 vectors 0.9997; docs/speed.md has the
benchmark's figures.

Imported only where the model runs (the encoder child), as it imports torch.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class LinearSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` for self-attention, written with ``nn.Linear`` so it can be quantised.

    Called as open_clip calls its attention: ``attn(x, x, x, need_weights=False, attn_mask=m)[0]``.
    """

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        width = attention.embed_dim
        self.heads = attention.num_heads
        self.batch_first = attention.batch_first
        self.qkv = nn.Linear(width, 3 * width, bias=attention.in_proj_bias is not None)
        self.qkv.weight = attention.in_proj_weight
        if attention.in_proj_bias is not None:
            self.qkv.bias = attention.in_proj_bias
        self.out = nn.Linear(width, width, bias=attention.out_proj.bias is not None)
        self.out.weight = attention.out_proj.weight
        if attention.out_proj.bias is not None:
            self.out.bias = attention.out_proj.bias

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if not (query is key and key is value):
            raise ValueError("LinearSelfAttention handles self-attention only")
        x = query if self.batch_first else query.transpose(0, 1)
        batch, tokens, width = x.shape
        heads = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = heads.permute(2, 0, 3, 1, 4)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:  # MultiheadAttention: True masks a key out; SDPA: True keeps it
                attn_mask = ~attn_mask
            if attn_mask.dim() == 3:  # one mask per sample and head, (batch * heads, tokens, tokens)
                attn_mask = attn_mask.view(batch, self.heads, tokens, tokens)
        mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.out(mixed.transpose(1, 2).reshape(batch, tokens, width))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _is_self_attention(module: nn.Module) -> bool:
    """Only the plain kind is rebuilt: one shared in-projection, no added bias/zero keys, no dropout."""
    return (isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim and module.dropout == 0
            and module.bias_k is None and not module.add_zero_attn)


def linear_attention(tower: nn.Module) -> int:
    """Swap every self-attention in ``tower`` for :class:`LinearSelfAttention`; returns how many."""
    swaps = [(parent, name, child) for parent in tower.modules()
             for name, child in parent.named_children() if _is_self_attention(child)]
    for parent, name, child in swaps:
        setattr(parent, name, LinearSelfAttention(child))
    return len(swaps)


def int8_tower(tower: nn.Module) -> Any:
    """``tower`` with its attention rebuilt and all its linear layers in dynamic int8."""
    linear_attention(tower)
    with warnings.catch_warnings():  # torch marks eager quantisation as deprecated; it works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(tower, {nn.Linear}, dtype=torch.qint8, inplace=True)
