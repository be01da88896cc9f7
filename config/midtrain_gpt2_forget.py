# Baseline: active forgetting during GPT-2 mid-training: every 1000 optimiser steps the token embedding is
# re-initialised N(0, 0.02) and its Adam state zeroed. GPT-2's LM head is tied to it, so it is reset too.
# The embedding has its own schedule, the authors' (disperse.forget_lr): peak forget_lr (0 = learning_rate, 5e-5,
# their command-line default), 8% linear warmup and linear decay to 0 over the run; 1526 // 1000 = 1, so the
# curve is not restarted at the reset (their formula). The body keeps midtrain_gpt2's cosine.
#   torchrun --standalone --nproc_per_node=8 train.py config/midtrain_gpt2_forget.py
include('midtrain_gpt2.py')

out_dir = 'out-midtrain-gpt2-forget'
wandb_run_name = 'midtrain-gpt2-forget'
forget_every = 1000
