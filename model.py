"""
model.py: the two decoder-only transformers we study, in one file.

  GPT    GPT-2 (Radford et al. 2019): learned positions, pre-LayerNorm blocks, GELU MLP, tied LM head.
  Qwen3  Hugging Face's Qwen3 dense model: RMSNorm, RoPE (theta 1e6), QK-norm, grouped-query attention,
         SwiGLU MLP, no biases, tied or untied LM head. The same class is Llama (SmolLM2, TinyLlama, Llama-3.x)
         and Qwen2 / Qwen2.5 through Qwen3Config's switches: qk_norm off, q/k/v biases (Qwen2), RoPE theta and
         scaling ('linear', 'llama3'), norm eps, head_dim; hf_type names the architecture it came from.

Both are the same skeleton, so they share one attention, one MLP, one block and one forward:

  x_0     = embed(idx)                                   GPT: wte[idx] + wpe[pos];  Qwen3: wte[idx]
  x_i     = x_{i-1} + attn(norm(x_{i-1}));  x_i += mlp(norm(x_i))     for blocks i = 1..n
  logits  = lm_head(norm_f(x_n))                          for EVERY position (not only the last)

forward(idx, targets=None, return_hidden=False) returns (logits, loss) and, with return_hidden=True,
(logits, loss, hidden) where `hidden` is the list of n_layer + 1 hidden states [B, T, C] exactly as Hugging
Face's output_hidden_states reports them:
  hidden[0]        the embedding output (token + position embeddings for GPT-2, after embedding dropout)
  hidden[i]        the output of block i, for i = 1 .. n_layer - 1
  hidden[n_layer]  the final norm applied to the output of block n_layer (the raw output of the last block
                   is not in the list, as in Hugging Face)
The dispersion loss (disperse.py) and the condensation measurement (eval.py) both consume this list.

hidden_states(idx, pos=None, attn_mask=None) also takes position ids pos [B, T] and a boolean mask
attn_mask [B, T, T] (True = may attend) in place of positions 0..T-1 and the causal mask. The benchmark scorer
(eval.py) uses them to pack the choices of one document into one row: the shared context once, then each
continuation with positions restarting after the context and attending to the context and itself only.

generate(idx, max_new_tokens, temperature, top_k) samples text (sample.py) with a KV cache: hidden_states
with kv_cache runs only the new tokens, at their positions, against the cached keys and values of the earlier ones.

Released weights (a hub name, a save_pretrained folder or a .gguf file) come in through hf_convert.from_pretrained,
and hf_convert.export_hf writes a checkpoint back out as a transformers folder (python eval.py --export_hf ...).
Checkpoints written by train.py: checkpoint.load_checkpoint('out/ckpt.pt').

Quick look:  python -c "from model import GPT, GPTConfig; print(GPT(GPTConfig()).num_params())"
"""

import inspect
import math
from dataclasses import dataclass, fields, asdict

import torch
import torch.nn as nn
from torch.nn import functional as F


# -----------------------------------------------------------------------------
# configurations

@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for fast matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_inner: int = 0  # MLP width; 0 means 4 * n_embd (the paper's sweep varies it: 64 / 256 / 1024 / 4096)
    dropout: float = 0.0
    bias: bool = True  # biases in Linears and LayerNorms: GPT-2's layout (released weights, hf_convert); train.py's
    # from-scratch default is False (nanoGPT's: a bit better and faster), and checkpoints store the value used
    tokenizer: str = 'gpt2'  # data/tokenizer.py name: what the token ids mean (eval.py encodes text with it)


@dataclass
class Qwen3Config:
    block_size: int = 4096  # the context we train with; RoPE itself has no length limit
    vocab_size: int = 151936
    n_layer: int = 28
    n_head: int = 16
    n_kv_head: int = 8  # grouped-query attention: n_head / n_kv_head query heads share one K/V head
    head_dim: int = 128  # independent of n_embd / n_head in Qwen3
    n_embd: int = 1024
    n_inner: int = 3072  # SwiGLU width (HF intermediate_size)
    rope_theta: float = 1e6
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    dropout: float = 0.0
    tokenizer: str = 'gpt2'  # data/tokenizer.py name: GPT-2's from scratch, the released model's name or folder
    # the switches that make this skeleton Llama (SmolLM2, TinyLlama, Llama-3.x) or Qwen2/2.5 instead of Qwen3
    qk_norm: bool = True  # Qwen3's RMSNorm of q and k per head; Llama and Qwen2 have none
    qkv_bias: bool = False  # biases on the q/k/v projections: Qwen2 always, Llama with attention_bias
    o_bias: bool = False  # a bias on the output projection: Llama / Qwen3 with attention_bias (never Qwen2)
    rope_type: str = 'default'  # 'default', 'linear' (positions / factor) or 'llama3' (Llama-3.1's band rescaling)
    rope_factor: float = 1.0  # the scaling factor of 'linear' and 'llama3'
    rope_low_freq_factor: float = 1.0  # 'llama3' only: wavelengths beyond original / low are divided by factor
    rope_high_freq_factor: float = 4.0  # 'llama3' only: wavelengths below original / high are kept
    rope_original_context: int = 8192  # 'llama3' only: the context the model was pretrained at
    hf_type: str = 'qwen3'  # the transformers architecture it came from and exports to: 'qwen3', 'qwen2', 'llama'

    def __post_init__(self):  # 0 = the usual choice, so a config file can leave these out
        self.n_kv_head = self.n_kv_head or self.n_head
        self.head_dim = self.head_dim or self.n_embd // self.n_head
        self.n_inner = self.n_inner or 3 * self.n_embd


# the released Qwen3 dense shapes (Hugging Face config.json of each; head_dim 128 and rope_theta 1e6 in all). The
# config/train_qwen3_*.py sweep takes its shapes from here (globals().update(QWEN3_PRESETS[...])) and
# fsdp.memory_table() reads them: the one copy.
QWEN3_PRESETS = {name: dict(shape, head_dim=128, rope_theta=1e6) for name, shape in {
    'Qwen/Qwen3-0.6B': dict(n_embd=1024, n_layer=28, n_head=16, n_kv_head=8, n_inner=3072, tie_embeddings=True),
    'Qwen/Qwen3-1.7B': dict(n_embd=2048, n_layer=28, n_head=16, n_kv_head=8, n_inner=6144, tie_embeddings=True),
    'Qwen/Qwen3-4B': dict(n_embd=2560, n_layer=36, n_head=32, n_kv_head=8, n_inner=9728, tie_embeddings=True),
    'Qwen/Qwen3-8B': dict(n_embd=4096, n_layer=36, n_head=32, n_kv_head=8, n_inner=12288, tie_embeddings=False),
    'Qwen/Qwen3-14B': dict(n_embd=5120, n_layer=40, n_head=40, n_kv_head=8, n_inner=17408, tie_embeddings=False),
    'Qwen/Qwen3-32B': dict(n_embd=5120, n_layer=64, n_head=64, n_kv_head=8, n_inner=25600, tie_embeddings=False),
}.items()}


# -----------------------------------------------------------------------------
# building blocks shared by both models

class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm with its weights cast to the input's dtype. Under FSDP's bf16 blocks the residual stream
    stays fp32 while the weights are bf16 (fsdp.shard); CUDA's autocast computes layer_norm in fp32 anyway, but
    CPU's would refuse the mix. A no-op cast everywhere else."""

    def forward(self, x):
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), bias, self.eps)


class RMSNorm(nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps), computed in float32 and cast back, as Hugging Face's Qwen3."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


ROPE_TYPES = ('default', 'linear', 'llama3')


def rope_inv_freq(head_dim, theta, device, scaling=None):
    """The head_dim / 2 RoPE frequencies w_j = theta^(-2j / head_dim), as transformers' rope_init functions:
    'linear' divides them all by factor (positions stretched factor times); 'llama3' (Llama-3.1) keeps the high
    frequencies (wavelength 2 pi / w < original / high_freq_factor), divides the low ones (wavelength >
    original / low_freq_factor) by factor, and blends the band between with s = (original / wavelength - low) /
    (high - low): w' = (1 - s) w / factor + s w. scaling: None or the config (its rope_* fields)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    kind = 'default' if scaling is None else scaling.rope_type
    assert kind in ROPE_TYPES, f"rope_type must be one of {ROPE_TYPES}, not {kind!r}"
    if kind == 'linear':
        inv_freq = inv_freq / scaling.rope_factor
    elif kind == 'llama3':
        factor, low, high = scaling.rope_factor, scaling.rope_low_freq_factor, scaling.rope_high_freq_factor
        original = scaling.rope_original_context
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
        smooth = (original / wavelen - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < original / high) * ~(wavelen > original / low)
        inv_freq = torch.where(medium, blended, scaled)
    return inv_freq


def rope_cos_sin(T, head_dim, theta, device, pos=None, scaling=None):
    """RoPE tables [T, head_dim] in float32, split-halves convention (Hugging Face's rotate_half):
    angle(t, j) = t * w_j for j < head_dim / 2 (w_j: rope_inv_freq), repeated for the second half.
    With position ids pos [B, T]: tables [B, 1, T, head_dim] for those positions (1 broadcasts over heads)."""
    inv_freq = rope_inv_freq(head_dim, theta, device, scaling)
    t = torch.arange(T, device=device, dtype=torch.float32) if pos is None else pos.float()[:, None, :]
    angles = t[..., None] * inv_freq  # the same float32 products as torch.outer
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x [B, H, T, D] rotated by position: x * cos + rotate_half(x) * sin, rotate_half(a, b) = (-b, a)."""
    a, b = x.chunk(2, dim=-1)
    rotated = torch.cat([-b, a], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with optional grouped K/V heads, QK-norm and RoPE.

    One fused projection gives q (n_head heads), k and v (n_kv_head heads each), all of size head_dim:
    GPT-2 is the case n_kv_head = n_head, head_dim = n_embd / n_head, no QK-norm, no RoPE.
    """

    def __init__(self, n_embd, n_head, n_kv_head, head_dim, bias, dropout, qk_norm_eps=None, o_bias=None):
        super().__init__()
        assert n_head % n_kv_head == 0, f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})"
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.c_attn = nn.Linear(n_embd, (n_head + 2 * n_kv_head) * head_dim, bias=bias)
        # Qwen2 has biases on q/k/v but not on the output projection: o_bias None = the same as bias
        self.c_proj = nn.Linear(n_head * head_dim, n_embd, bias=bias if o_bias is None else o_bias)
        # Qwen3's QK-norm: one RMSNorm over head_dim, weights shared by all heads, applied before RoPE
        self.q_norm = RMSNorm(head_dim, qk_norm_eps) if qk_norm_eps else None
        self.k_norm = RMSNorm(head_dim, qk_norm_eps) if qk_norm_eps else None
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x, rope=None, attn_mask=None, kv_cache=None):
        B, T, C = x.size()
        hd = self.head_dim
        q, k, v = self.c_attn(x).split([self.n_head * hd, self.n_kv_head * hd, self.n_kv_head * hd], dim=2)
        q = q.view(B, T, self.n_head, hd)
        k = k.view(B, T, self.n_kv_head, hd)
        v = v.view(B, T, self.n_kv_head, hd).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, heads, T, hd)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # flash / memory-efficient kernels where available; enable_gqa shares each K/V head across its group.
        # An explicit mask [B, T, T] (packed scoring) replaces the causal one and broadcasts over heads.
        # With a KV cache of P positions the mask is [B, T, P + T] (a shared prefix under packed rows).
        if attn_mask is not None:
            assert attn_mask.dim() == 3 and attn_mask.shape[:2] == (B, T) and attn_mask.dtype == torch.bool, \
                attn_mask.shape
            attn_mask = attn_mask[:, None]
        if kv_cache is not None:  # this block's keys and values of the P earlier positions (generation, prefixes)
            if kv_cache:  # a cache of batch 1 (one prefix shared by every row) broadcasts over the B rows
                k = torch.cat([kv_cache['k'].expand(B, -1, -1, -1), k], dim=2)
                v = torch.cat([kv_cache['v'].expand(B, -1, -1, -1), v], dim=2)
            kv_cache['k'], kv_cache['v'] = k, v  # (B, n_kv_head, P + T, hd)
            P = k.size(2) - T
            if P > 0 and attn_mask is None:  # query t sits at position P + t, sees keys 0 .. P + t
                attn_mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(diagonal=P)
        assert attn_mask is None or attn_mask.size(-1) == k.size(2), (attn_mask.shape, k.shape)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=attn_mask is None, enable_gqa=self.n_kv_head != self.n_head)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * hd)
        return self.resid_dropout(self.c_proj(y))


class SwiGLU(torch.autograd.Function):
    """silu(gate) * up, [gate, up] = h.chunk(2) of the fused c_fc output h [..., 2 I], with a backward that writes
    both halves of dL/dh into one [..., 2 I] tensor. Through autograd, the chunk's backward concatenates the two
    halves: one more copy of h per layer (60 cat calls, ~1% of a SmolLM2-135M CPU step, measured with
    torch.profiler). The kernels are autograd's own (mul, silu_backward), so the gradients are the same bits."""

    @staticmethod
    def forward(ctx, h):
        gate, up = h.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(h, act)
        return act * up

    @staticmethod
    def backward(ctx, grad):
        h, act = ctx.saved_tensors
        gate, up = h.chunk(2, dim=-1)
        grad_h = torch.empty_like(h)
        grad_gate, grad_up = grad_h.chunk(2, dim=-1)
        torch.mul(grad, act, out=grad_up)  # d(act * up)/d up = act
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=grad_gate)
        return grad_h


def swiglu(h):
    """silu(gate) * up of the fused [gate, up] = h; under torch.compile the plain ops, which Inductor fuses."""
    if torch.compiler.is_compiling():
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return SwiGLU.apply(h)


class MLP(nn.Module):
    """GPT-2: c_proj(gelu_tanh(c_fc(x))).  Qwen3 (gated=True): c_proj(silu(gate) * up), [gate, up] = c_fc(x)."""

    def __init__(self, n_embd, n_inner, bias, dropout, gated=False):
        super().__init__()
        self.gated = gated
        self.c_fc = nn.Linear(n_embd, (2 if gated else 1) * n_inner, bias=bias)
        self.c_proj = nn.Linear(n_inner, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.gated:
            h = swiglu(h)
        else:
            h = F.gelu(h, approximate='tanh')  # GPT-2 was trained with the tanh approximation
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, ln_1, attn, ln_2, mlp):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = ln_1, attn, ln_2, mlp

    def forward(self, x, rope=None, attn_mask=None, kv_cache=None):
        x = x + self.attn(self.ln_1(x), rope, attn_mask, kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


# -----------------------------------------------------------------------------
# the shared language model: forward, init, optimizer, MFU, generation

class LanguageModel(nn.Module):
    """What GPT and Qwen3 have in common. A subclass builds self.transformer (wte, h, ln_f, ...), self.lm_head,
    and defines embed(idx, pos=None) -> (x, rope)."""

    model_type = None  # 'gpt' or 'qwen3': stored in checkpoints to rebuild the right class

    def _init_weights_and_tie(self, tie):
        if tie:
            self.lm_head.weight = self.transformer.wte.weight  # https://paperswithcode.com/method/weight-tying
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream: the sum of 2 * n_layer
        # such writes keeps the residual's variance independent of depth.
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    @staticmethod
    def _init_weights(module):
        # N(0, 0.02) for Linear and Embedding as GPT-2 and Hugging Face (PyTorch's N(0, 1) embedding is wrong here)
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    @property
    def tied(self):
        return self.lm_head.weight is self.transformer.wte.weight

    def num_params(self, non_embedding=True):
        """Parameter count (shared tensors once). non_embedding drops the position embeddings and, when the
        LM head is untied, the input token embedding: neither is a matmul, so neither counts in FLOPs."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if hasattr(self.transformer, 'wpe'):
                n -= self.transformer.wpe.weight.numel()
            if not self.tied:
                n -= self.transformer.wte.weight.numel()
        return n

    def embedding_params(self):
        """Parameters in the lookup tables: the token (and GPT's position) embedding, and an untied LM head; the
        rest of num_params(non_embedding=False) is the blocks and the final norm (train.py logs the split)."""
        n = sum(self.transformer[k].weight.numel() for k in ('wte', 'wpe') if k in self.transformer)
        return n if self.tied else n + self.lm_head.weight.numel()

    def hidden_states(self, idx, pos=None, attn_mask=None, kv_cache=None):
        """The n_layer + 1 hidden states [B, T, C] in Hugging Face's convention (module docstring), without the
        LM head: measuring condensation needs no [B, T, vocab] logits. pos [B, T] (long) and attn_mask
        [B, T, T] (bool, True = may attend) replace positions 0..T-1 and the causal mask (packed rows).
        kv_cache (generation): a list of one dict per block, empty at first, that keeps the keys and values of
        the positions seen so far; idx then holds only the new tokens and pos their positions (see generate)."""
        B, T = idx.size()
        assert T <= self.config.block_size, \
            f"Cannot forward a sequence of length {T}: block_size is only {self.config.block_size}"
        assert pos is None or pos.shape == (B, T), f"pos must be [B, T] = {(B, T)}, not {tuple(pos.shape)}"
        x, rope = self.embed(idx, pos)
        hidden = [x]
        for i, block in enumerate(self.transformer.h):
            x = block(x, rope, attn_mask, None if kv_cache is None else kv_cache[i])
            hidden.append(x)
        hidden[-1] = self.transformer.ln_f(x)  # the last entry is taken after the final norm
        return hidden

    def forward(self, idx, targets=None, return_hidden=False):
        hidden = self.hidden_states(idx)
        logits = self.lm_head(hidden[-1])  # (B, T, vocab) for every position
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        if return_hidden:
            return logits, loss, hidden
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on matrices and embeddings (dim >= 2), none on biases and norm weights."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({'fused': True} if fused else {}))

    def flops_per_token(self, T):
        """Training FLOPs per token (forward + backward = 3 x forward), PaLM appendix B:
        6 N for the matmuls with the N non-embedding weights, plus 12 * L * (n_head * head_dim) * T for the
        attention scores and their use on values (2 matmuls of T x head_dim per query head, forward 2 FLOPs per
        multiply-add, x3 for backward). GQA shares K/V weights (fewer N) but not score FLOPs."""
        c = self.config
        head_dim = getattr(c, 'head_dim', c.n_embd // c.n_head)
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * head_dim * T

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops=312e12):
        """Model FLOPs utilisation: achieved FLOP/s over the accelerator's peak. Dense bf16 peaks:
        A100 312e12, H100 SXM / H200 989e12, H100 PCIe 756e12."""
        T = self.config.block_size
        flops_per_iter = self.flops_per_token(T) * T * fwdbwd_per_iter
        return flops_per_iter / dt / peak_flops

    def crop_block_size(self, block_size):
        """Shrink the context (e.g. load GPT-2's 1024 and train at 256)."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        if hasattr(self.transformer, 'wpe'):
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None, vocab_size=None,
                 use_cache=True):
        """Sample max_new_tokens tokens after idx (B, T), feeding each prediction back in (nanoGPT's sampler).

        With the KV cache each step runs only the newest token through the blocks: its keys and values join
        those kept for the earlier positions (at position p = tokens so far: GPT's wpe[p], Qwen3's RoPE angle
        p * theta^(-2j/d)), and the LM head runs on the last position only. Once the text is longer than
        block_size the context is its last block_size tokens, as in nanoGPT; every position then shifts by one
        per step, so those steps recompute the window without the cache.
        temperature 0 is greedy (argmax); top_k keeps the k most likely tokens; vocab_size (the tokenizer's
        vocabulary) never samples the unused rows of a padded LM head (50304 - 50257 = 47 for GPT-2's)."""
        B, block_size = idx.size(0), self.config.block_size
        kv_cache, new = None, idx  # new: the tokens whose keys and values are not cached yet
        for _ in range(max_new_tokens):
            if use_cache and idx.size(1) <= block_size:
                if kv_cache is None:
                    kv_cache = [{} for _ in self.transformer.h]
                P = idx.size(1) - new.size(1)  # positions already in the cache
                pos = torch.arange(P, idx.size(1), device=idx.device).expand(B, -1)
                x = self.hidden_states(new, pos, kv_cache=kv_cache)[-1][:, -1]
            else:
                x = self.hidden_states(idx[:, -block_size:])[-1][:, -1]
            logits = self.lm_head(x).float()  # (B, vocab): the last position only
            if vocab_size is not None:
                logits[:, vocab_size:] = -float('inf')
            if temperature == 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float('inf')
                idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
            idx = torch.cat((idx, idx_next), dim=1)
            new = idx_next
        return idx


class GPT(LanguageModel):
    model_type = 'gpt'

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = c = config
        n_inner = c.n_inner or 4 * c.n_embd
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd),
            wpe=nn.Embedding(c.block_size, c.n_embd),
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList([Block(ln_1=LayerNorm(c.n_embd, bias=c.bias),
                                   attn=CausalSelfAttention(n_embd=c.n_embd, n_head=c.n_head, n_kv_head=c.n_head,
                                                            head_dim=c.n_embd // c.n_head, bias=c.bias,
                                                            dropout=c.dropout),
                                   ln_2=LayerNorm(c.n_embd, bias=c.bias),
                                   mlp=MLP(n_embd=c.n_embd, n_inner=n_inner, bias=c.bias, dropout=c.dropout))
                             for _ in range(c.n_layer)]),
            ln_f=LayerNorm(c.n_embd, bias=c.bias),
        ))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self._init_weights_and_tie(tie=True)

    def embed(self, idx, pos=None):
        if pos is None:
            pos = torch.arange(idx.size(1), dtype=torch.long, device=idx.device)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos)), None


class Qwen3(LanguageModel):
    model_type = 'qwen3'

    def __init__(self, config):
        super().__init__()
        self.config = c = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd),
            drop=nn.Dropout(c.dropout),
            h=nn.ModuleList([Block(ln_1=RMSNorm(c.n_embd, eps=c.norm_eps),
                                   attn=CausalSelfAttention(n_embd=c.n_embd, n_head=c.n_head, n_kv_head=c.n_kv_head,
                                                            head_dim=c.head_dim, bias=c.qkv_bias, dropout=c.dropout,
                                                            qk_norm_eps=c.norm_eps if c.qk_norm else None,
                                                            o_bias=c.o_bias),
                                   ln_2=RMSNorm(c.n_embd, eps=c.norm_eps),
                                   mlp=MLP(n_embd=c.n_embd, n_inner=c.n_inner, bias=False, dropout=c.dropout,
                                           gated=True))
                             for _ in range(c.n_layer)]),
            ln_f=RMSNorm(c.n_embd, c.norm_eps),
        ))
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self._init_weights_and_tie(tie=c.tie_embeddings)

    def embed(self, idx, pos=None):
        # cos/sin are recomputed in float32 each call (cheap: T x head_dim), so a model cast to bf16 keeps
        # full-precision angles, as Hugging Face does
        rope = rope_cos_sin(idx.size(1), self.config.head_dim, self.config.rope_theta, idx.device, pos, self.config)
        return self.transformer.drop(self.transformer.wte(idx)), rope


# -----------------------------------------------------------------------------
# building models: from a checkpoint's arguments (checkpoint.py reads the files, hf_convert.py released weights)

# The one table of architectures: model_type -> (config dataclass, model class, Hugging Face model_type).
# ('qwen3' also holds Llama and Qwen2 weights: hf_convert.HF_TYPES lists what from_pretrained reads.)
# Adding an architecture is one entry here; train.py's model keys are the config's fields (tests/test_configs.py
# checks that train.py has a default for each).
MODELS = {
    'gpt': (GPTConfig, GPT, 'gpt2'),
    'qwen3': (Qwen3Config, Qwen3, 'qwen3'),
}


def build_model(model_args):
    """A freshly initialised model from model_args (a checkpoint's: the config's fields plus model_type, and
    'lora', the adapters' settings, if any (lora.py); fields it lacks take the config's defaults). ValueError in
    one sentence for an unknown type or field."""
    args = dict(model_args)
    model_type = args.pop('model_type', 'gpt')
    lora = args.pop('lora', None)
    if model_type not in MODELS:
        raise ValueError(f"Unknown model_type '{model_type}': choose one of {sorted(MODELS)}.")
    config_cls, model_cls, _ = MODELS[model_type]
    unknown = sorted(set(args) - {f.name for f in fields(config_cls)})
    if unknown:
        raise ValueError(f"These model arguments are not {model_type} settings: {unknown}.")
    model = model_cls(config_cls(**args))
    if lora:
        from lora import apply_lora
        apply_lora(model, **lora)
    return model


def model_args_of(model):
    """The model_args dict train.py stores in a checkpoint: the config's fields plus model_type (and 'lora')."""
    lora = getattr(model, 'lora', None)
    return dict(asdict(model.config), model_type=model.model_type, **({'lora': lora} if lora else {}))
