"""The BERT encoder of all-MiniLM-L6-v2 in plain torch, from its safetensors weights.

Why not `transformers.BertModel`: importing transformers imports huggingface_hub and
with it `ssl`, which fails inside the python backend's stub when the stub's libpython
is not the venv interpreter's (see model_repository/README.md, "minilm"). This is the
same computation (post-LayerNorm BERT, exact-erf GELU, padding masked out of
attention); the tests compare it with sentence-transformers.
"""

import json

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


class Bert:
    """Inference-only BERT encoder: ``(input_ids, attention_mask) -> last_hidden_state``."""

    def __init__(self, directory):
        config = json.loads((directory / "config.json").read_text())
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {config['hidden_act']!r}")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.max_positions = int(config["max_position_embeddings"])
        w = load_file(str(directory / "model.safetensors"))
        w = {k.removeprefix("bert."): v.float().contiguous() for k, v in w.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.vocab_size = self.word.shape[0]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type0 = w["embeddings.token_type_embeddings.weight"][0]

        def pair(name):
            return w[name + ".weight"], w[name + ".bias"]

        self.emb_norm = pair("embeddings.LayerNorm")
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            # Q, K and V as one [3H, H] projection: one matmul instead of three.
            q, k, v = (pair(p + f"attention.self.{n}") for n in ("query", "key", "value"))
            qkv = (torch.cat([q[0], k[0], v[0]]), torch.cat([q[1], k[1], v[1]]))
            self.layers.append(
                (
                    qkv,
                    pair(p + "attention.output.dense"),
                    pair(p + "attention.output.LayerNorm"),
                    pair(p + "intermediate.dense"),
                    pair(p + "output.dense"),
                    pair(p + "output.LayerNorm"),
                )
            )

    @torch.inference_mode()
    def __call__(self, input_ids, attention_mask):
        """int64 [B, L] each (L <= 512) -> float32 [B, L, hidden]; token_type_ids are 0."""
        batch, length = input_ids.shape
        if length > self.max_positions:
            raise ValueError(f"sequence of {length} tokens > {self.max_positions}")
        hidden, heads = self.hidden, self.heads
        x = self.word[input_ids] + self.position[:length] + self.token_type0
        x = F.layer_norm(x, (hidden,), *self.emb_norm, self.eps)
        # Padding keys get no attention (additive mask, as transformers builds it).
        keep = attention_mask[:, None, None, :].bool()
        bias = torch.zeros(keep.shape, dtype=x.dtype).masked_fill(~keep, torch.finfo(x.dtype).min)
        for qkv, attn_out, attn_norm, inter, out, out_norm in self.layers:
            q, k, v = (
                F.linear(x, *qkv)
                .view(batch, length, 3, heads, hidden // heads)
                .permute(2, 0, 3, 1, 4)
            )
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            ctx = ctx.transpose(1, 2).reshape(batch, length, hidden)
            x = F.layer_norm(F.linear(ctx, *attn_out) + x, (hidden,), *attn_norm, self.eps)
            h = F.gelu(F.linear(x, *inter))
            x = F.layer_norm(F.linear(h, *out) + x, (hidden,), *out_norm, self.eps)
        return x
