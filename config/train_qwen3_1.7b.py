# Qwen3-1.7B-shaped model from scratch (the paper's pre-training sweep, section 4), cross-entropy only; sharded.
#   torchrun --standalone --nproc_per_node=8 train.py config/train_qwen3_1.7b.py
# Shapes: Qwen/Qwen3-1.7B (28 layers, 2048 wide, 16 query / 8 KV heads of 128, SwiGLU 6144, tied) with GPT-2's
# tokenizer (vocab 50304): N = 1.51B parameters. The authors' batch: 256 sequences of 4096 = 1,048,576 tokens
# per step = 4 sequences x 64 micro-batches (8 per GPU on 8 GPUs). Chinchilla: 20 N = 30.2B tokens = 28,847
# steps; warmup 5% = 1,442 steps (within [100, 4000]); cosine to 0.1 x 2.5e-4.
# Memory per GPU (fsdp.memory_gb; 8 GPUs, B = 4): state 16 N / 8 = 3.0 GB, unsharded fp32 gradient while
# accumulating 4 N = 6.0 GB, activations 34 x 2048 x 28 layers x 16,384 tokens = 32 GB, logits 6 x 50304 x
# 16,384 = 4.9 GB: ~46 GB (DDP would need 16 N = 24 GB for the state alone: ~61 GB). OpenWebText is ~9B
# tokens: 30B tokens are ~3.4 epochs; prepare a larger corpus with data/prepare.py for a faithful run.
# Time: model.flops_per_token(4096) x 30.2B tokens = 3.6e20 FLOPs: ~1.3 days on 8 H100s at 40% MFU.
import model  # a module, so not a config key (the configurator skips it)

out_dir = 'out-qwen3-1.7b'
wandb_log = True
wandb_project = 'disperse-gpt'
wandb_run_name = 'qwen3-1.7b-ce'

dataset = 'openwebtext'
model_type = 'qwen3'
globals().update(model.QWEN3_PRESETS['Qwen/Qwen3-1.7B'])  # n_layer .. tie_embeddings, from model.py

parallelism = 'fsdp'
activation_checkpointing = False
batch_size = 4
block_size = 4096
gradient_accumulation_steps = 64

learning_rate = 2.5e-4
min_lr = 2.5e-5  # 0.1 x
max_iters = 28847
lr_decay_iters = 28847
warmup_iters = 1442
weight_decay = 0.1
grad_clip = 1.0

eval_interval = 1000
eval_iters = 50
log_interval = 10
