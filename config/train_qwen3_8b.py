# Qwen3-8B-shaped model from scratch (the paper's pre-training sweep, section 4), cross-entropy only; sharded,
# with activation checkpointing.
#   torchrun --nnodes=8 --node_rank=$RANK --nproc_per_node=8 --master_addr=$HEAD --master_port=29500 \
#       train.py config/train_qwen3_8b.py
# Shapes: Qwen/Qwen3-8B (36 layers, 4096 wide, 32 query / 8 KV heads of 128, SwiGLU 12288, untied) with
# GPT-2's tokenizer (vocab 50304): N = 7.36B parameters. The authors' batch: 1024 sequences of 4096 =
# 4,194,304 tokens per step = 4 sequences x 256 micro-batches (32 per GPU on 8 GPUs, 4 per GPU on 64).
# Chinchilla: 20 N = 147.2B tokens = 35,086 steps; warmup 5% = 1,754 steps (within [100, 4000]); cosine to
# 0.1 x 1.5e-4.
# Memory per GPU (fsdp.memory_gb; 8 GPUs, B = 4): state 16 N / 8 = 14.7 GB, unsharded fp32 gradient while
# accumulating 4 N = 29.4 GB, checkpointed activations (2 x 36 + 34) x 4096 x 16,384 tokens = 7.1 GB, logits
# 4.9 GB: ~56 GB. Without checkpointing the activations alone are 34 x 4096 x 36 x 16,384 = 82 GB (~131 GB);
# DDP would need 16 N = 118 GB of state. On 64 GPUs the state is 1.8 GB per GPU.
# Time: model.flops_per_token(4096) x 147B tokens = 7.4e21 FLOPs: ~3.4 days on 64 H100s at 40% MFU.
import model  # a module, so not a config key (the configurator skips it)

out_dir = 'out-qwen3-8b'
wandb_log = True
wandb_project = 'disperse-gpt'
wandb_run_name = 'qwen3-8b-ce'

dataset = 'openwebtext'
model_type = 'qwen3'
globals().update(model.QWEN3_PRESETS['Qwen/Qwen3-8B'])  # n_layer .. tie_embeddings, from model.py

parallelism = 'fsdp'
activation_checkpointing = True
batch_size = 4
block_size = 4096
gradient_accumulation_steps = 256

learning_rate = 1.5e-4
min_lr = 1.5e-5  # 0.1 x
max_iters = 35086
lr_decay_iters = 35086
warmup_iters = 1754
weight_decay = 0.1
grad_clip = 1.0

eval_interval = 500
eval_iters = 50
log_interval = 10
