"""model.py against Hugging Face transformers (the independent truth) and against hand-checkable facts."""
import math
import os
import random

import numpy as np
import pytest
import torch

from hf_convert import from_pretrained
from checkpoint import load_checkpoint, save_checkpoint
from model import GPT, GPTConfig, Qwen3, Qwen3Config, build_model, model_args_of

def tiny_hf_gpt2(tmp_path, n_inner=None):
    import transformers  # a requirement: missing, these tests fail (only they need it)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=3, n_head=4, n_inner=n_inner,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # HF inits LayerNorms to (1, 0); randomise them so a swapped weight would show
        for n, p in hf.named_parameters():
            if 'ln' in n:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    return hf


def tiny_hf_qwen3(tmp_path, tie):
    import transformers
    # head_dim (12) != hidden / heads (48 / 8 = 6); 8 query heads over 2 KV heads = 4 per group
    cfg = transformers.Qwen3Config(vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                                   num_attention_heads=8, num_key_value_heads=2, head_dim=12,
                                   max_position_embeddings=64, tie_word_embeddings=tie, rope_theta=1e6,
                                   attention_dropout=0.0)
    torch.manual_seed(0)
    hf = transformers.Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if 'norm' in n:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    return hf


def assert_same_as_hf(hf, ours, vocab, T=20):
    idx = torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = hf(idx, output_hidden_states=True)
        logits, loss, hidden = ours(idx, return_hidden=True)
    assert len(hidden) == len(out.hidden_states) == ours.config.n_layer + 1
    for a, b in zip(hidden, out.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)
    assert loss is None


@pytest.mark.parametrize("n_inner", [None, 40])
def test_gpt_matches_hf_gpt2(tmp_path, n_inner):
    hf = tiny_hf_gpt2(tmp_path, n_inner)
    ours = from_pretrained(str(tmp_path))
    assert isinstance(ours, GPT) and ours.config.tokenizer == 'gpt2'
    assert_same_as_hf(hf, ours.eval(), 97)


@pytest.mark.parametrize("tie", [True, False])
def test_qwen3_matches_hf(tmp_path, tie):
    hf = tiny_hf_qwen3(tmp_path, tie)
    ours = from_pretrained(str(tmp_path))
    assert isinstance(ours, Qwen3) and ours.config.tokenizer == str(tmp_path)  # its own tokenizer, in its folder
    assert ours.tied == tie
    assert ours.config.head_dim == 12 and ours.config.n_kv_head == 2
    assert_same_as_hf(hf, ours.eval(), 101)


def test_missing_model_is_one_sentence(tmp_path):
    with pytest.raises(SystemExit, match="not a local model folder"):
        from_pretrained(str(tmp_path / "nope"))


def test_hidden_states_convention_and_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 50, (3, 10))
    logits, loss, hidden = model(idx, targets=idx, return_hidden=True)
    assert logits.shape == (3, 10, 50)  # every position, not only the last
    assert len(hidden) == 3 and all(h.shape == (3, 10, 16) for h in hidden)
    pos = torch.arange(10)
    torch.testing.assert_close(hidden[0], model.transformer.wte(idx) + model.transformer.wpe(pos))
    # the last entry is after the final LayerNorm: zero mean and unit variance per token before its affine map
    ln = model.transformer.ln_f
    raw = (hidden[-1] - ln.bias) / ln.weight
    torch.testing.assert_close(raw.mean(-1), torch.zeros(3, 10), atol=1e-5, rtol=0)
    # loss = mean negative log-likelihood, computed by hand; -1 targets are ignored
    logp = torch.log_softmax(logits, -1)
    nll = -logp.gather(-1, idx[..., None]).squeeze(-1)
    torch.testing.assert_close(loss, nll.mean())
    targets = idx.clone()
    targets[:, :5] = -1
    _, loss2 = model(idx, targets)
    torch.testing.assert_close(loss2, nll[:, 5:].mean())


def test_init_statistics_and_tying():
    torch.manual_seed(0)
    c = GPTConfig(n_layer=4, n_head=4, n_embd=256, vocab_size=1000, block_size=64)
    model = GPT(c)
    assert model.tied
    assert abs(model.transformer.wte.weight.std().item() - 0.02) < 1e-3
    proj = model.transformer.h[0].mlp.c_proj.weight
    assert abs(proj.std().item() - 0.02 / math.sqrt(2 * 4)) < 1e-3
    # non-embedding count: everything minus the position table (the tied token table is the LM head's matmul)
    total = sum(p.numel() for p in model.parameters())
    assert model.num_params() == total - 64 * 256
    q = Qwen3(Qwen3Config(vocab_size=100, n_layer=2, n_head=4, n_kv_head=2, head_dim=8, n_embd=32, n_inner=64,
                          tie_embeddings=False))
    assert not q.tied and q.num_params() == sum(p.numel() for p in q.parameters()) - 100 * 32
    # the lookup tables train.py logs apart from the blocks, by hand: GPT wte + wpe; untied Qwen3 wte + lm_head
    assert model.embedding_params() == 1000 * 256 + 64 * 256
    assert q.embedding_params() == 2 * 100 * 32
    assert q.num_params(non_embedding=False) - q.embedding_params() == 2 * (2 * 32 + 32 * (32 + 2 * 16) + 32 * 32
                                                                           + 2 * 8 + 3 * 32 * 64) + 32


def test_optimizer_groups():
    model = GPT(GPTConfig(block_size=8, vocab_size=20, n_layer=1, n_head=2, n_embd=8))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert all(p.dim() >= 2 for p in decay['params']) and all(p.dim() < 2 for p in no_decay['params'])
    n = sum(p.numel() for g in opt.param_groups for p in g['params'])
    assert n == sum(p.numel() for p in model.parameters())


def test_mfu_flops_formula():
    # GPT-2 124M at T=1024: 6N + 12 L H Q T with Q = 64 (nanoGPT's arithmetic)
    model = GPT(GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024))
    N = model.num_params()
    assert model.flops_per_token(1024) == 6 * N + 12 * 12 * 12 * 64 * 1024
    mfu = model.estimate_mfu(fwdbwd_per_iter=1, dt=1.0, peak_flops=1.0)
    assert mfu == model.flops_per_token(1024) * 1024
    # Qwen3: attention FLOPs use head_dim (not n_embd / n_head) and all query heads
    q = Qwen3(Qwen3Config(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, head_dim=16, n_embd=32, n_inner=48,
                          block_size=32))
    assert q.flops_per_token(32) == 6 * q.num_params() + 12 * 2 * 4 * 16 * 32


def test_crop_block_size():
    model = GPT(GPTConfig(block_size=16, vocab_size=30, n_layer=1, n_head=2, n_embd=8)).eval()
    model.crop_block_size(8)
    assert model.transformer.wpe.weight.shape == (8, 8)
    with pytest.raises(AssertionError, match="block_size is only 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


# -----------------------------------------------------------------------------
# generation: checked against decoding by hand from full forward passes (no cache, every position's logits)


def greedy_by_hand(model, idx, n):
    """argmax of the full forward's last-position logits, step by step, context cropped to block_size."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def prompt(vocab, B=2, T=5, seed=3):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("i", [0, 1])
def test_top_k_1_and_temperature_0_are_greedy(i):
    model = tiny_models()[i]  # block_size 32: 5 + 40 tokens also runs the cropped-window steps
    idx = prompt(97)
    with torch.no_grad():
        want = greedy_by_hand(model, idx, 40)
    assert torch.equal(model.generate(idx, 40, temperature=0), want)
    assert torch.equal(model.generate(idx, 40, temperature=1e-4), want)  # the limit temperature -> 0
    for seed in range(3):  # top_k=1 leaves one token to sample, at any temperature
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(model.generate(idx, 40, temperature=2.0, top_k=1, generator=g), want)


@pytest.mark.parametrize("i", [0, 1])
def test_top_k_samples_only_the_k_most_likely(i):
    """Every sampled token is among the k largest full-forward logits at its step, and more than one of them
    is drawn (a random tiny model is close to uniform, so ignoring top_k would draw outside the top 3)."""
    model, k = tiny_models()[i], 3
    idx = prompt(97, B=4)
    out = model.generate(idx, 20, temperature=1.0, top_k=k, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, _ = model(out[:, :-1])
    top = logits[:, idx.size(1) - 1:].topk(k, dim=-1).indices  # the k best at each sampled step
    drawn = out[:, idx.size(1):]
    assert (top == drawn[..., None]).any(-1).all()
    assert len(drawn.unique()) > 4


def test_fixed_seed_repeats_and_vocab_size_masks_padding():
    model = tiny_models()[0]
    idx = prompt(97)
    a, b, c = (model.generate(idx, 30, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(7)  # sample.py's way: the global generator
    d = model.generate(idx, 30)
    torch.manual_seed(7)
    assert torch.equal(model.generate(idx, 30), d)
    # a padded LM head: ids >= vocab_size are never drawn, even at a high temperature
    e = model.generate(idx, 200, temperature=5.0, vocab_size=10, generator=torch.Generator().manual_seed(0))
    assert e[:, 5:].max() < 10


@pytest.mark.parametrize("i", [0, 1])
def test_kv_cache_equals_full_forward(i):
    """Feeding a sequence in chunks through the KV cache (with their positions) gives the logits of the full
    forward at every position, to 1e-5: GPT's learned positions, Qwen3's RoPE and grouped K/V heads."""
    model = tiny_models()[i]
    idx = prompt(97, B=2, T=30)
    with torch.no_grad():
        full, _ = model(idx)
        cache, start, got = [{} for _ in model.transformer.h], 0, []
        for n in [7, 1, 1, 4, 1, 16]:  # a prompt, single steps, and chunks after a non-empty cache
            pos = torch.arange(start, start + n).expand(2, n)
            got.append(model.lm_head(model.hidden_states(idx[:, start:start + n], pos, kv_cache=cache)[-1]))
            start += n
    torch.testing.assert_close(torch.cat(got, 1), full, atol=1e-5, rtol=1e-5)
    assert cache[0]['k'].shape == (2, model.config.n_kv_head if i else model.config.n_head, 30, 12)


@pytest.mark.parametrize("i", [0, 1])
def test_cached_generate_equals_uncached(i):
    model = tiny_models()[i]
    idx = prompt(97)
    for kw in [dict(temperature=0), dict(temperature=1.0, top_k=10)]:
        a = model.generate(idx, 40, generator=torch.Generator().manual_seed(1), **kw)
        b = model.generate(idx, 40, generator=torch.Generator().manual_seed(1), use_cache=False, **kw)
        assert torch.equal(a, b), kw


def tiny_qwen3():
    return Qwen3(Qwen3Config(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, head_dim=8, n_embd=32, n_inner=48,
                             block_size=32, tokenizer='Qwen/Qwen3-0.6B'))


def test_checkpoint_roundtrip_through_save_and_load(tmp_path):
    """What train.py writes (save_checkpoint) loads back (weights_only) into the same model and tokenizer."""
    model = tiny_qwen3()
    save_checkpoint({'model': model.state_dict(), 'model_args': model_args_of(model), 'iter_num': 3,
                     'rng': [{'torch': torch.get_rng_state(), 'cuda': None}]}, str(tmp_path / 'c.pt'))
    loaded, ckpt = load_checkpoint(str(tmp_path / 'c.pt'))
    assert isinstance(loaded, Qwen3) and loaded.config == model.config and ckpt['iter_num'] == 3
    assert loaded.config.tokenizer == 'Qwen/Qwen3-0.6B'
    idx = torch.randint(0, 64, (1, 8))
    torch.testing.assert_close(loaded(idx)[0], model.eval()(idx)[0])
    assert load_checkpoint(str(tmp_path / 'c.pt'), dropout=0.1)[0].config.dropout == 0.1


def test_a_checkpoint_of_the_previous_format_still_loads(tmp_path):
    """Before, checkpoints held Python / NumPy RNG states and the tokenizer in config: weights_only still reads
    them (NumPy arrays are data), and the tokenizer comes from the config."""
    model = tiny_qwen3()
    args = {k: v for k, v in model_args_of(model).items() if k != 'tokenizer'}
    rng = [{'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}]
    torch.save({'model': model.state_dict(), 'model_args': args, 'config': {'tokenizer': 'Qwen/Qwen3-0.6B'},
                'rng': rng}, tmp_path / 'old.pt')
    loaded, _ = load_checkpoint(str(tmp_path / 'old.pt'))
    assert loaded.config == model.config


def test_build_model_and_foreign_checkpoints_are_one_sentence(tmp_path):
    model = tiny_qwen3()
    sd = model.state_dict()
    with pytest.raises(ValueError, match="Unknown model_type 'llama'"):
        build_model({'model_type': 'llama'})
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        load_checkpoint(str(tmp_path / 'missing.pt'))
    # a checkpoint whose weights belong to another model type
    torch.save({'model': sd, 'model_args': dict(model_args_of(model), model_type='gpt')}, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match="not gpt settings"):
        load_checkpoint(str(tmp_path / 'bad.pt'))
    gpt_args = {k: v for k, v in model_args_of(model).items() if k in ('n_layer', 'n_head', 'n_embd', 'vocab_size',
                                                                       'block_size')}
    torch.save({'model': sd, 'model_args': dict(gpt_args, model_type='gpt')}, tmp_path / 'bad2.pt')
    with pytest.raises(ValueError, match="do not fit the gpt model"):
        load_checkpoint(str(tmp_path / 'bad2.pt'))


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_load_checkpoint_refuses_code_and_names_damaged_files(tmp_path):
    """eval.py --ckpt goes through load_checkpoint: a pickle that would run a command is refused, running
    nothing; a truncated, empty or directory checkpoint names itself and the intact one beside it."""
    model = tiny_qwen3()
    good = {'model': model.state_dict(), 'model_args': model_args_of(model)}
    marker = tmp_path / 'ran'
    torch.save(dict(good, extra=RunsACommand(marker)), tmp_path / 'evil.pt')
    with pytest.raises(ValueError, match="could run code when loaded, so it is refused"):
        load_checkpoint(str(tmp_path / 'evil.pt'))
    assert not marker.exists()
    save_checkpoint(good, str(tmp_path / 'best.pt'))
    data = (tmp_path / 'best.pt').read_bytes()
    for damage in (data[:len(data) // 3], b''):
        (tmp_path / 'ckpt.pt').write_bytes(damage)
        with pytest.raises(ValueError) as e:
            load_checkpoint(str(tmp_path / 'ckpt.pt'))
        assert str(e.value).startswith(str(tmp_path / 'ckpt.pt')) and \
            f"the intact {tmp_path / 'best.pt'} beside it" in str(e.value)
    (tmp_path / 'ckpt.pt').unlink()
    (tmp_path / 'ckpt.pt').mkdir()
    with pytest.raises(ValueError, match="is a directory, not a checkpoint file; the intact"):
        load_checkpoint(str(tmp_path / 'ckpt.pt'))


def tiny_models():
    torch.manual_seed(0)
    return [GPT(GPTConfig(block_size=32, vocab_size=97, n_layer=2, n_head=4, n_embd=48)).eval(),
            Qwen3(Qwen3Config(block_size=32, vocab_size=101, n_layer=2, n_head=4, n_kv_head=2, head_dim=12,
                              n_embd=48, n_inner=80, rope_theta=100.0)).eval()]  # small theta: positions matter


@pytest.mark.parametrize("i", [0, 1])
def test_explicit_positions_and_causal_mask_equal_the_default(i):
    model = tiny_models()[i]
    idx = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(20).expand(2, 20)
    mask = torch.ones(20, 20, dtype=torch.bool).tril().expand(2, 20, 20)
    with torch.no_grad():
        for a, b in zip(model.hidden_states(idx), model.hidden_states(idx, pos, mask)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("i", [0, 1])
def test_packed_row_gives_each_branch_its_own_hidden_states(i):
    """One row [context, branch a, branch b]: positions restart after the context for each branch, which sees
    the context and its own earlier tokens only; each branch's states equal running context + branch alone."""
    model = tiny_models()[i]
    g = torch.Generator().manual_seed(2)
    ctx, a, b = (torch.randint(0, 97, (n,), generator=g) for n in (6, 4, 3))
    row = torch.cat([ctx, a, b])[None]
    pos = torch.cat([torch.arange(6), torch.arange(6, 10), torch.arange(6, 9)])[None]
    seg = torch.tensor([0] * 6 + [1] * 4 + [2] * 3)
    mask = torch.ones(13, 13, dtype=torch.bool).tril() & ((seg[None, :] == 0) | (seg[None, :] == seg[:, None]))
    with torch.no_grad():
        packed = model.hidden_states(row, pos, mask[None])
        alone_a = model.hidden_states(torch.cat([ctx, a])[None])
        alone_b = model.hidden_states(torch.cat([ctx, b])[None])
    for h, ha, hb in zip(packed, alone_a, alone_b):
        torch.testing.assert_close(h[0, :10], ha[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h[0, 10:], hb[0, 6:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_backward_gives_autograds_gradient_bit_for_bit(dtype):
    """model.SwiGLU writes both halves of dL/dh into one tensor; autograd through chunk, silu and mul is the truth."""
    from model import SwiGLU
    torch.manual_seed(0)
    h = torch.randn(2, 5, 2 * 24, dtype=dtype, requires_grad=True)
    grad = torch.randn(2, 5, 24, dtype=dtype)
    gate, up = h.chunk(2, dim=-1)
    ref = torch.nn.functional.silu(gate) * up
    (ref_grad,) = torch.autograd.grad(ref, h, grad)
    out = SwiGLU.apply(h)
    (got_grad,) = torch.autograd.grad(out, h, grad)
    assert torch.equal(out, ref) and torch.equal(got_grad, ref_grad)


def test_gated_mlp_compiles_to_eagers_numbers():
    """Under torch.compile the gated MLP takes the plain ops (model.swiglu); forward and gradients match eager."""
    from model import MLP
    torch.manual_seed(0)
    mlp = MLP(n_embd=16, n_inner=24, bias=False, dropout=0.0, gated=True)
    x = torch.randn(2, 5, 16)
    eager = mlp(x)
    eager_grad = torch.autograd.grad(eager.square().sum(), mlp.c_fc.weight)[0]
    compiled = torch.compile(mlp)(x)
    compiled_grad = torch.autograd.grad(compiled.square().sum(), mlp.c_fc.weight)[0]
    assert torch.allclose(compiled, eager, atol=1e-6) and torch.allclose(compiled_grad, eager_grad, atol=1e-5)
