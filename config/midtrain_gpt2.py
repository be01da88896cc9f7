# The paper's GPT-2 mid-training (section 4), cross-entropy only: released GPT-2 124M on WikiText-103.
#   python data/prepare.py --name wikitext103 --dataset Salesforce/wikitext --dataset_config wikitext-103-raw-v1 --no_eot
#   torchrun --standalone --nproc_per_node=8 train.py config/midtrain_gpt2.py
# 16 sequences * 1024 tokens * 8 micro-batches (1 per GPU on 8 GPUs) = 131,072 tokens per step;
# 1526 steps * 131,072 = 200M tokens (about 1.7 passes over WikiText-103's 117M tokens).
out_dir = 'out-midtrain-gpt2'
init_from = 'gpt2'
dataset = 'wikitext103'  # rows are lines of articles: concatenated without separators (--no_eot), as the paper
wandb_log = True
wandb_project = 'disperse-gpt'
wandb_run_name = 'midtrain-gpt2-ce'

batch_size = 16
block_size = 1024
gradient_accumulation_steps = 8

max_iters = 1526
lr_decay_iters = 1526
learning_rate = 5e-5
min_lr = 0.0  # cosine to zero (Hugging Face Trainer's cosine schedule)
warmup_iters = 0
warmup_frac = 0.2  # 20% linear warmup = 305 steps
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dropout = 0.1  # released GPT-2's config (resid/embd/attn pdrop 0.1), active in the authors' Trainer runs

eval_interval = 306  # the paper evaluates at step 0, every 306 steps and at the end
eval_iters = 100
log_interval = 10
always_save_checkpoint = True
