# The paper's mid-training recipe (section 4: AdamW (0.9, 0.95), weight decay 0.1, lr 5e-5, cosine schedule with
# 20% linear warmup, grad clip 1.0), cross-entropy only, scaled to one CPU: a released SmolLM2-135M-Instruct
# (Llama architecture, real weights from a Q4_1 GGUF, dequantized to float32) on Shakespeare in its own tokens.
#   python data/released.py smollm2-135m
#   python data/shakespeare/prepare.py --tokenizer ~/.cache/disperse-gpt/released/SmolLM2-135M-Instruct.Q4_1.gguf \
#       --name shakespeare_smollm2
#   python train.py config/midtrain_smollm2.py
# 2 sequences * 512 tokens = 1,024 tokens per step; 32 steps = 32,768 tokens. 512 tokens: the context at which
# condensation is measured (eval.py --seq_len 512).
import os

out_dir = 'out-midtrain-smollm2'
init_from = os.path.join(os.path.expanduser('~'), '.cache', 'disperse-gpt', 'released', 'SmolLM2-135M-Instruct.Q4_1.gguf')
dataset = 'shakespeare_smollm2'

batch_size = 2
block_size = 512
gradient_accumulation_steps = 1

max_iters = 32
lr_decay_iters = 32
learning_rate = 5e-5
min_lr = 0.0
warmup_iters = 0
warmup_frac = 0.2
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
dropout = 0.0  # SmolLM2 has none

eval_interval = 32  # the val loss at step 0 and at the end
eval_iters = 10  # 10 x 2 windows of 512 tokens, the same windows at every eval
log_interval = 1
always_save_checkpoint = True
