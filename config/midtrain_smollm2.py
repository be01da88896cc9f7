# The paper's mid-training (section 4) at CPU scale on a real released model, cross-entropy only: SmolLM2-135M-
# Instruct (llama architecture; a Q4_1 GGUF dequantized to float32, not the fp16 release) on Shakespeare in its
# own tokenizer. The weights and the token files:
#   python data/released.py smollm2-135m
#   python data/shakespeare/prepare.py --tokenizer ~/.cache/disperse-gpt/released/SmolLM2-135M-Instruct.Q4_1.gguf --name shakespeare_smollm2
#   OMP_NUM_THREADS=1 python train.py config/midtrain_smollm2.py
# 4 sequences * 256 tokens * 1 micro-batch = 1,024 tokens per step; 100 steps = 102,400 tokens
# (one thread does about 75 tokens/s on this model: ~14 s a step, ~25 minutes a run).
import os
out_dir = 'out-midtrain-smollm2'
init_from = os.path.expanduser('~/.cache/disperse-gpt/released/SmolLM2-135M-Instruct.Q4_1.gguf')
dataset = 'shakespeare_smollm2'
wandb_run_name = 'midtrain-smollm2-ce'

batch_size = 4
block_size = 256
gradient_accumulation_steps = 1

max_iters = 100
lr_decay_iters = 100
learning_rate = 5e-5  # the paper's mid-training rate
min_lr = 0.0  # cosine to zero
warmup_iters = 0
warmup_frac = 0.2  # 20% linear warmup, as the paper
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dropout = 0.0  # SmolLM2's config has no dropout

eval_interval = 25
eval_iters = 10  # 10 x 4 = 40 fixed windows of 256 val tokens per evaluation
log_interval = 1
always_save_checkpoint = True
device = 'cpu'
compile = False
