# Baseline: noisy embeddings (NEFTune-style) during GPT-2 mid-training: U(-m, m) added to the token embeddings,
# m = alpha / sqrt(L * d) = 1 / sqrt(1024 * 768) = 0.0011 for alpha = 1 (the paper's GPT-2 setting).
#   torchrun --standalone --nproc_per_node=8 train.py config/midtrain_gpt2_noise.py
include('midtrain_gpt2.py')

out_dir = 'out-midtrain-gpt2-noise'
wandb_run_name = 'midtrain-gpt2-noise'
noise_alpha = 1.0
