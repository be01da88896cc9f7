# The paper's Qwen3-0.6B mid-training (section 4), cross-entropy only: released Qwen3-0.6B on WikiText-103,
# context 4096, with Qwen3's own tokenizer (uint32 token files).
#   python data/prepare.py --name wikitext103_qwen3 --dataset Salesforce/wikitext \
#       --dataset_config wikitext-103-raw-v1 --no_eot --tokenizer Qwen/Qwen3-0.6B
#   torchrun --standalone --nproc_per_node=8 train.py config/midtrain_qwen3_0.6b.py
# 4 sequences * 4096 tokens * 8 micro-batches (1 per GPU on 8 GPUs) = 131,072 tokens per step;
# 1526 steps * 131,072 = 200M tokens.
out_dir = 'out-midtrain-qwen3-0.6b'
init_from = 'Qwen/Qwen3-0.6B'
dataset = 'wikitext103_qwen3'
wandb_log = True
wandb_project = 'disperse-gpt'
wandb_run_name = 'midtrain-qwen3-0.6b-ce'

batch_size = 4
block_size = 4096
gradient_accumulation_steps = 8

max_iters = 1526
lr_decay_iters = 1526
learning_rate = 5e-5
min_lr = 0.0
warmup_iters = 0
warmup_frac = 0.2
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dropout = 0.0  # Qwen3 has no dropout

eval_interval = 306
eval_iters = 50
log_interval = 10
