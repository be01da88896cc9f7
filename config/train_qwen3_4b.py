# Qwen3-4B-shaped model from scratch (the paper's pre-training sweep, section 4), cross-entropy only; sharded.
#   torchrun --standalone --nproc_per_node=8 train.py config/train_qwen3_4b.py
# Shapes: Qwen/Qwen3-4B (36 layers, 2560 wide, 32 query / 8 KV heads of 128, SwiGLU 9728, tied) with GPT-2's
# tokenizer (vocab 50304): N = 3.76B parameters. The authors' batch: 1024 sequences of 4096 = 4,194,304 tokens
# per step = 2 sequences x 512 micro-batches (64 per GPU on 8 GPUs, 8 per GPU on 64). Chinchilla: 20 N =
# 75.2B tokens = 17,940 steps; warmup 5% = 897 steps (within [100, 4000]); cosine to 0.1 x 2e-4.
# Memory per GPU (fsdp.memory_gb; 8 GPUs, B = 2): state 16 N / 8 = 7.5 GB, unsharded fp32 gradient while
# accumulating 4 N = 15 GB, activations 34 x 2560 x 36 layers x 8,192 tokens = 25.7 GB, logits 2.5 GB: ~51 GB.
# DDP cannot hold it on an 80 GB GPU: 16 N = 60 GB of state before any activation (~88 GB).
# Time: model.flops_per_token(4096) x 75.2B tokens = 2.2e21 FLOPs: ~1 day on 64 H100s at 40% MFU (8 on 8).
import model  # a module, so not a config key (the configurator skips it)

out_dir = 'out-qwen3-4b'
wandb_log = True
wandb_project = 'disperse-gpt'
wandb_run_name = 'qwen3-4b-ce'

dataset = 'openwebtext'
model_type = 'qwen3'
globals().update(model.QWEN3_PRESETS['Qwen/Qwen3-4B'])  # n_layer .. tie_embeddings, from model.py

parallelism = 'fsdp'
activation_checkpointing = False
batch_size = 2
block_size = 4096
gradient_accumulation_steps = 512

learning_rate = 2e-4
min_lr = 2e-5  # 0.1 x
max_iters = 17940
lr_decay_iters = 17940
warmup_iters = 897
weight_decay = 0.1
grad_clip = 1.0

eval_interval = 500
eval_iters = 50
log_interval = 10
