# The paper's mid-training (section 4) at CPU scale on a real released model, cross-entropy only: SmolLM2-135M-
# Instruct (llama architecture; a Q4_1 GGUF dequantized to float32, not the fp16 release) on Shakespeare in its
# own tokenizer. The weights and the token files:
#   python data/released.py smollm2-135m
#   python data/shakespeare/prepare.py --tokenizer ~/.cache/disperse-gpt/released/SmolLM2-135M-Instruct.Q4_1.gguf --name shakespeare_smollm2
#   OMP_NUM_THREADS=1 python train.py config/midtrain_smollm2.py
# 4 sequences * 256 tokens * 1 micro-batch = 1,024 tokens per step; 30 steps = 30,720 tokens.
# Measured on one thread of a shared 2-core CPU: 10.7 s per step when it is quiet (96 tokens/s; transformers'
# LlamaForCausalLM doing the same AdamW step, interleaved: 10.0 s), 27-30 s under other jobs' load (the first
# step ~87 s); so a run is 5-15 minutes of steps plus 4 evaluations of 20 windows (~1 minute each).
import os
out_dir = 'out-midtrain-smollm2'
init_from = os.path.expanduser('~/.cache/disperse-gpt/released/SmolLM2-135M-Instruct.Q4_1.gguf')
dataset = 'shakespeare_smollm2'
wandb_run_name = 'midtrain-smollm2-ce'

batch_size = 4
block_size = 256
gradient_accumulation_steps = 1

max_iters = 30
lr_decay_iters = 30
learning_rate = 5e-5  # the paper's mid-training rate
min_lr = 0.0  # cosine to zero
warmup_iters = 0
warmup_frac = 0.2  # 20% linear warmup, as the paper
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dropout = 0.0  # SmolLM2's config has no dropout

eval_interval = 10
eval_iters = 5  # 5 x 4 = 20 fixed windows of 256 val tokens per evaluation
log_interval = 1
always_save_checkpoint = True
device = 'cpu'
compile = False
