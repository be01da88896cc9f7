"""lora.py: at B = 0 the model is the base exactly; only the adapters train; the merged weights give the unmerged
logits (and transformers' own model reads them from an export); checkpoints hold the adapters and resume;
DDP, FSDP, activation checkpointing and the dispersion loss run with them (multi-process runs marked slow).

    python -m pytest -q tests/test_lora.py
"""
import json

import pytest
import torch
import transformers

import eval as evaluate
import lora
from checkpoint import load_checkpoint, save_checkpoint
from conftest import train
from model import GPT, GPTConfig, Qwen3, Qwen3Config, build_model, model_args_of

LORA = ["--lora_rank=4", "--lora_alpha=8.0", "--lora_targets=c_attn,c_proj,c_fc"]


def tiny(kind):
    torch.manual_seed(0)
    if kind == 'gpt':
        return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16, bias=True)).eval()
    return Qwen3(Qwen3Config(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_kv_head=2, head_dim=8, n_embd=16,
                             n_inner=24, qk_norm=False, qkv_bias=True, hf_type='qwen2')).eval()


IDX = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize('kind', ['gpt', 'qwen3'])
def test_zero_b_is_the_base_exactly_and_only_adapters_train(kind):
    model = tiny(kind)
    with torch.no_grad():
        base = model(IDX)[0]
    lora.apply_lora(model, rank=4, alpha=8, targets='c_attn,c_proj,c_fc')
    with torch.no_grad():
        assert torch.equal(model(IDX)[0], base)  # B = 0: bit for bit
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(('.lora_A', '.lora_B')) for n in trainable)
    # by hand: per block c_attn (16 -> 3*16 or (4+2*2)*8 = 64), attn c_proj (32 or 16 -> 16), c_fc (16 -> 64 or 48),
    # mlp c_proj (64 or 24 -> 16); an adapter on in -> out has r (in + out) numbers in A and B together
    shapes = {'gpt': [(16, 48), (16, 16), (16, 64), (64, 16)], 'qwen3': [(16, 64), (32, 16), (16, 48), (24, 16)]}[kind]
    assert lora.trainable_params(model)[0] == 2 * 4 * sum(i + o for i, o in shapes)
    _, loss = model(IDX, IDX)
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize('kind', ['gpt', 'qwen3'])
def test_merged_equals_unmerged(kind):
    model = lora.apply_lora(tiny(kind), rank=4, alpha=8, targets='c_attn,c_proj,c_fc')
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith('lora_B'):
                p.normal_(0, 0.1)
        unmerged = model(IDX)[0]
        assert (unmerged - tiny(kind)(IDX)[0]).abs().max() > 1e-3  # the adapters do change the function
        lora.merge(model)
        assert not any('lora' in n for n in model.state_dict()) and model.lora is None
        torch.testing.assert_close(model(IDX)[0], unmerged, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_holds_the_adapters_and_exports_merged(tmp_path):
    """load_checkpoint rebuilds the adapters from model_args; --export_hf writes a plain Qwen2ForCausalLM whose
    logits (transformers' own forward) equal ours with the adapters."""
    model = lora.apply_lora(tiny('qwen3'), rank=4, alpha=8, targets='c_attn,c_proj')
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith('lora_B'):
                p.normal_(0, 0.1)
        ours = model(IDX)[0]
    save_checkpoint({'model': model.state_dict(), 'model_args': model_args_of(model), 'config': {}},
                    str(tmp_path / 'ckpt.pt'))
    back, _ = load_checkpoint(str(tmp_path / 'ckpt.pt'))
    assert back.lora == dict(rank=4, alpha=8.0, targets='c_attn,c_proj', dropout=0.0)
    with torch.no_grad():
        assert torch.equal(back(IDX)[0], ours)
    evaluate.main(['--export_hf', str(tmp_path / 'ckpt.pt'), str(tmp_path / 'hf')])
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'hf')).eval()
    assert type(hf) is transformers.Qwen2ForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(hf(IDX).logits, ours, atol=1e-5, rtol=1e-5)


def test_unknown_target_is_one_sentence():
    with pytest.raises(ValueError, match=r"^lora_targets names 'q_proj', which is no linear layer of the blocks; "
                                         r"they are attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj\.$"):
        lora.apply_lora(tiny('gpt'), rank=4, alpha=8, targets='c_attn,q_proj')
    with pytest.raises(ValueError, match="lora_rank must be a positive integer"):
        lora.apply_lora(tiny('gpt'), rank=0, alpha=8)


def test_training_moves_only_the_adapters_checkpoints_and_resumes(tmp_path, data_dir):
    """A run with LoRA + dispersion + activation checkpointing: the base weights stay bit-identical, the adapters
    move, the checkpoint holds them, a resume continues; a resume with other LoRA settings is refused."""
    out = tmp_path / 'out'
    extra = [*LORA, "--dispersion=angular_spread", "--dispersion_coeff=0.1", "--activation_checkpointing=True",
             "--eval_interval=2", "--max_iters=2"]
    train(out, data_dir, "--seed=3", *extra)
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['lora'] == dict(rank=4, alpha=8.0, targets='c_attn,c_proj,c_fc', dropout=0.0)
    # the same base as the run's: built with the same seed (train.py seeds before building the model)
    torch.manual_seed(3)
    base = build_model({k: v for k, v in ckpt['model_args'].items() if k != 'lora'}).state_dict()
    for k, v in ckpt['model'].items():
        if 'lora_' not in k:
            assert torch.equal(v, base[k]), k
    assert all(v.abs().max() > 0 for k, v in ckpt['model'].items() if k.endswith('lora_B'))
    train(out, data_dir, *extra[:-1], "--max_iters=3", "--init_from=resume")
    log = [json.loads(line) for line in open(out / 'log.jsonl')]
    assert [r['iter'] for r in log if 'loss' in r][-1] == 3
    p = train(out, data_dir, "--lora_rank=8", "--max_iters=4", "--init_from=resume", check=False)
    assert p.returncode != 0 and "has LoRA" in p.stderr and "\n" not in p.stderr.strip()


def test_a_bad_target_stops_train_before_anything_is_built(tmp_path, data_dir):
    p = train(tmp_path / 'out', data_dir, "--lora_rank=4", "--lora_targets=q_proj", "--max_iters=1", check=False)
    assert p.returncode != 0 and "lora_targets names 'q_proj'" in p.stderr
    assert not (tmp_path / 'out' / 'ckpt.pt').exists()


@pytest.mark.slow
@pytest.mark.parametrize('parallelism', ['ddp', 'fsdp'])
def test_two_processes_train_the_adapters(tmp_path, data_dir, parallelism):
    """torchrun, 2 gloo processes: DDP and FSDP train the adapters (base frozen), checkpoint and resume."""
    out = tmp_path / 'out'
    extra = [*LORA, f"--parallelism={parallelism}", "--dispersion=angular_spread", "--eval_interval=2",
             "--gradient_accumulation_steps=2"]
    train(out, data_dir, *extra, "--max_iters=2", nproc=2)
    train(out, data_dir, *extra, "--max_iters=3", "--init_from=resume", nproc=2)
    log = [json.loads(line) for line in open(out / 'log.jsonl')]
    assert [r['iter'] for r in log if 'loss' in r][-1] == 3
