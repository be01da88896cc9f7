# GPT-2 124M from scratch on OpenWebText, cross-entropy only: the baseline of config/gpt2_dispersion.py.
#   python data/openwebtext/prepare.py
#   torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py
# 12 batch * 1024 block * 5 accum * 8 GPUs = 491,520 tokens per step;
# 600,000 steps * 491,520 = 295B tokens (nanoGPT: val loss ~2.85 after about 4 days on 8 x A100 40GB).
out_dir = 'out-gpt2'
wandb_log = True
wandb_project = 'disperse-gpt'
wandb_run_name = 'gpt2-124M-ce'

dataset = 'openwebtext'
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8

max_iters = 600000
lr_decay_iters = 600000
eval_interval = 1000
eval_iters = 200  # 200 x 12 = 2,400 fixed val windows = 2.5M tokens
log_interval = 10
weight_decay = 1e-1
