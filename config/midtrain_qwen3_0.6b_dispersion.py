# The paper's Qwen3-0.6B mid-training with the dispersion loss: as config/midtrain_qwen3_0.6b.py plus
# angular_spread on all blocks, lambda 0.1, tau 1, clamp 0.25 (the paper's Qwen3 setting), 256 tokens.
#   torchrun --standalone --nproc_per_node=8 train.py config/midtrain_qwen3_0.6b_dispersion.py
include('midtrain_qwen3_0.6b.py')
include('dispersion.py')

out_dir = 'out-midtrain-qwen3-0.6b-dispersion'
wandb_run_name = 'midtrain-qwen3-0.6b-dispersion'
dispersion_clamp = 0.25  # the paper's Qwen3 setting
