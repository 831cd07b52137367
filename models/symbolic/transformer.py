"""A next-note music Transformer: Transformer-XL attention, segment memory and a beat embedding.

One decoder-only model, nanoGPT style. Per token the input is
    token embedding + position-in-bar embedding + bar-index embedding      (beat embedding)
where position-in-bar = beats % bar_steps and bar index = beats // bar_steps (clamped).

Attention is Transformer-XL's relative attention (Dai et al. 2019, section 3.3):
    score(i, j) = (q_i + u) . k_j  +  (q_i + v) . W_r R_{i-j}
with R a sinusoid of the distance i - j and u, v learned per head. Keys carry no position, so
keys and values of past tokens stay valid as the sequence grows: generation caches them and
pays one step per new token. The distance term is built by gathering, per (query, key) pair, the
projected sinusoid of its distance (the same numbers as XL's "relative shift", written plainly),
and is passed to `scaled_dot_product_attention` as an additive bias together with the causal
and optional local-window mask.

Segment memory: each layer keeps its input hidden states of the previous segment(s) (the last
`mem_len`, detached), and the next segment attends over [memory; segment].

The vanilla baseline is the same module with `relative=False, mem_len=0, beat_embedding=False`:
learned absolute positions, no memory, no beat embedding (see `MusicConfig.vanilla`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import load_config, load_weights, pick_device
from models.symbolic.config import MusicConfig


def sinusoid(distances: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-XL's relative position encoding: (n,) distances -> (n, dim)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=distances.device) / dim))
    angles = distances.float()[:, None] * inv_freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def attention_mask(q_len: int, k_len: int, window: int, device: torch.device) -> torch.Tensor:
    """Bool (q_len, k_len), True where allowed. Queries are the last q_len of the k_len keys.

    A query sees itself and the past only; with `window` w > 0, only the last w positions.
    """
    distance = distance_matrix(q_len, k_len, device)
    allowed = distance >= 0
    if window:
        allowed &= distance < window
    return allowed


def distance_matrix(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """(q_len, k_len) int: query position minus key position, queries aligned to the end."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)
    return q_pos[:, None] - torch.arange(k_len, device=device)[None, :]


class Attention(nn.Module):
    def __init__(self, config: MusicConfig) -> None:
        super().__init__()
        self.n_head, self.d_head = config.n_head, config.d_model // config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)
        self.dropout = config.dropout
        self.relative = config.relative
        if config.relative:
            self.r_proj = nn.Linear(config.d_model, config.d_model, bias=False)
            self.u = nn.Parameter(torch.zeros(config.n_head, self.d_head))
            self.v = nn.Parameter(torch.zeros(config.n_head, self.d_head))

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.d_head).transpose(1, 2)

    def keys_values(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, T, dh) of normalized hidden states h (B, T, d)."""
        _, k, v = self.qkv(h).split(h.shape[-1], dim=-1)
        return self.heads(k), self.heads(v)

    def project_rel(self, rel: torch.Tensor) -> torch.Tensor:
        """W_r R: sinusoids (K, d) of distances 0..K-1 -> (K, H, dh)."""
        return self.r_proj(rel).view(rel.shape[0], self.n_head, self.d_head)

    def forward(
        self,
        x: torch.Tensor,
        past_k: torch.Tensor | None,
        past_v: torch.Tensor | None,
        r: torch.Tensor | None,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d); past_k/v (B, H, M, dh) or None; r (>=K, H, dh) from `project_rel`.

        Returns the output and the full keys and values (past + new), for a cache to keep.
        """
        q, k, v = (self.heads(t) for t in self.qkv(x).split(x.shape[-1], dim=-1))
        if past_k is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        t_len, k_len = q.shape[2], k.shape[2]
        bias = torch.zeros(t_len, k_len, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~mask, float("-inf"))
        if self.relative:
            r = r[:k_len].to(q.dtype)
            by_distance = torch.einsum("bhtd,khd->bhtk", q + self.v[:, None, :].to(q.dtype), r)
            index = distance_matrix(t_len, k_len, q.device).clamp(min=0)
            index = index.expand(*by_distance.shape[:2], t_len, k_len)
            bias = bias + torch.gather(by_distance, 3, index) / math.sqrt(self.d_head)
            q = q + self.u[:, None, :].to(q.dtype)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(x.shape)
        return self.out(y), k, v


class Block(nn.Module):
    def __init__(self, config: MusicConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, config.d_ff),
            nn.GELU(),
            nn.Linear(config.d_ff, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, *attention: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Attention, then the MLP, each on the normalized input and added to it. `attention`
        (past_k, past_v, r, mask) and the returned keys and values are `Attention.forward`'s."""
        a, k, v = self.attn(self.ln1(x), *attention)
        x = x + a
        return x + self.mlp(self.ln2(x)), k, v


class KVCache:
    """Per-layer keys and values of the tokens generated so far, trimmed to the model's span.

    Also holds each layer's projected relative encodings: they depend only on the distance, so
    they are computed once per generation, not once per token.
    """

    def __init__(self, n_layer: int, span: int) -> None:
        self.span = span
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self.r: list[torch.Tensor] | None = None
        self.length = 0  # tokens seen so far (absolute positions for the vanilla model)

    def keep(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        # The next query stands one step later, so it can see span - 1 of these keys.
        keep = self.span - 1
        self.k[layer], self.v[layer] = k[:, :, -keep:], v[:, :, -keep:]


class MusicTransformer(nn.Module):
    def __init__(self, config: MusicConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if config.d_model % config.n_head:
            raise ValueError(f"d_model {config.d_model} is not divisible by n_head {config.n_head}")
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        if config.beat_embedding:
            self.pos_in_bar = nn.Embedding(config.max_bar_steps, config.d_model)
            self.bar = nn.Embedding(config.max_bars, config.d_model)
        if not config.relative:
            self.abs_pos = nn.Embedding(config.seg_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        # Seeded through `generator` (not the process-global RNG), as in nanoGPT's init.
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02, generator=generator)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def embed(
        self, tokens: torch.Tensor, beats: torch.Tensor, bar_steps: torch.Tensor, start: int = 0
    ) -> torch.Tensor:
        """Input vectors; `start` is the absolute position of tokens[:, 0] (vanilla model only)."""
        x = self.tok(tokens)
        if self.config.beat_embedding:
            steps = bar_steps.clamp(min=1)
            x = x + self.pos_in_bar((beats % steps).clamp(max=self.config.max_bar_steps - 1))
            x = x + self.bar((beats // steps).clamp(max=self.config.max_bars - 1))
        if not self.config.relative:
            positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
            if positions[-1] >= self.config.seg_len:
                raise ValueError(f"the vanilla model sees at most {self.config.seg_len} positions")
            x = x + self.abs_pos(positions)
        return self.drop(x)

    def forward(
        self,
        tokens: torch.Tensor,
        beats: torch.Tensor,
        bar_steps: torch.Tensor,
        mems: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (B, T, vocab) for one segment, and the memory for the next segment.

        tokens, beats, bar_steps: (B, T) int. mems: per layer (B, M, d) hidden states of earlier
        segments, as returned by the previous call (empty list when mem_len is 0).
        """
        x = self.embed(tokens, beats, bar_steps)
        t_len = tokens.shape[1]
        m_len = mems[0].shape[1] if mems else 0
        k_len = m_len + t_len
        mask = attention_mask(t_len, k_len, self.config.window, tokens.device)
        rel = sinusoid(torch.arange(k_len, device=tokens.device), self.config.d_model)
        new_mems = []
        for layer, block in enumerate(self.blocks):
            if self.config.mem_len:
                seen = torch.cat([mems[layer], x], dim=1) if mems else x
                new_mems.append(seen[:, -self.config.mem_len :].detach())
            past_k = past_v = None
            if m_len:
                # The memory is gradient-free: its keys and values are computed without a graph.
                with torch.no_grad():
                    past_k, past_v = block.attn.keys_values(block.ln1(mems[layer]))
            r = block.attn.project_rel(rel) if self.config.relative else None
            x, _, _ = block(x, past_k, past_v, r, mask)
        return self.logits(x), new_mems

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer, self.config.span)

    @torch.no_grad()
    def step(
        self, tokens: torch.Tensor, beats: torch.Tensor, bar_steps: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """Logits (B, T, vocab) for new tokens given everything already in `cache` (updated).

        Costs one pass over the new tokens; keys and values of the past come from the cache.
        """
        x = self.embed(tokens, beats, bar_steps, start=cache.length)
        t_len = tokens.shape[1]
        past_len = cache.k[0].shape[2] if cache.k[0] is not None else 0
        k_len = past_len + t_len
        mask = attention_mask(t_len, k_len, self.config.span, tokens.device)
        if self.config.relative and (cache.r is None or cache.r[0].shape[0] < k_len):
            distances = torch.arange(max(k_len, self.config.span), device=tokens.device)
            rel = sinusoid(distances, self.config.d_model)
            cache.r = [block.attn.project_rel(rel) for block in self.blocks]
        for layer, block in enumerate(self.blocks):
            r = cache.r[layer] if self.config.relative else None
            x, k, v = block(x, cache.k[layer], cache.v[layer], r, mask)
            cache.keep(layer, k, v)
        cache.length += t_len
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        # Output weights tied to the token embedding, as in nanoGPT; done as a product rather
        # than a shared Parameter, which safetensors refuses to save.
        return F.linear(self.ln_f(x), self.tok.weight)

    @classmethod
    def load(cls, run_dir: str | Path, device: torch.device | None = None) -> MusicTransformer:
        """The model saved in a run directory (models.checkpoint), in eval mode."""
        model = cls(load_config(run_dir, MusicConfig))
        load_weights(run_dir, model)
        return model.to(device or pick_device()).eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
