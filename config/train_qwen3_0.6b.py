# A Qwen3-0.6B-shaped model from scratch on OpenWebText with GPT-2's tokenizer (the paper's pre-training setup,
# section 4: seq 4096, AdamW lr 3e-4, wd 0.1, warmup then cosine to 0.1x, clip 1.0, bf16), cross-entropy only:
# the baseline of config/train_qwen3_0.6b_dispersion.py.
#   torchrun --standalone --nproc_per_node=8 train.py config/train_qwen3_0.6b.py
# 4 sequences * 4096 tokens * 16 micro-batches (2 per GPU on 8 GPUs) = 262,144 tokens per step;
# 40,000 steps = 10.5B tokens. Shapes: 28 layers, 1024 wide, 16 query / 8 KV heads of 128, SwiGLU 3072,
# tied embeddings; 0.44B parameters in the blocks + 51.5M in the 50304 x 1024 token table.
import model  # a module, so not a config key (the configurator skips it)

out_dir = 'out-qwen3-0.6b'
wandb_log = True
wandb_project = 'disperse-gpt'
wandb_run_name = 'qwen3-0.6b-ce'

dataset = 'openwebtext'
model_type = 'qwen3'
globals().update(model.QWEN3_PRESETS['Qwen/Qwen3-0.6B'])  # n_layer .. tie_embeddings, from model.py

batch_size = 4
block_size = 4096
gradient_accumulation_steps = 16

learning_rate = 3e-4
min_lr = 3e-5  # 0.1 x
max_iters = 40000
lr_decay_iters = 40000
warmup_iters = 2000
weight_decay = 0.1
grad_clip = 1.0

eval_interval = 1000
eval_iters = 50
log_interval = 10
