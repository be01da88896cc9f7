# Baseline: active forgetting during GPT-2 mid-training: every 1000 optimiser steps the token embedding is
# re-initialised N(0, 0.02) and its Adam state zeroed. GPT-2's LM head is tied to it, so it is reset too.
# (The paper gives active forgetting its own warmup/decay schedule; here it shares midtrain_gpt2's.)
#   torchrun --standalone --nproc_per_node=8 train.py config/midtrain_gpt2_forget.py
include('midtrain_gpt2.py')

out_dir = 'out-midtrain-gpt2-forget'
wandb_run_name = 'midtrain-gpt2-forget'
forget_every = 1000
