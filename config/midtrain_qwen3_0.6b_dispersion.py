# The paper's Qwen3-0.6B mid-training with the dispersion loss: as config/midtrain_qwen3_0.6b.py plus
# angular_spread on all blocks, lambda 0.1, tau 1, clamp 0.25 (the paper's Qwen3 setting), 256 tokens.
#   torchrun --standalone --nproc_per_node=8 train.py config/midtrain_qwen3_0.6b_dispersion.py
import os
exec(open(os.path.join(os.path.dirname(__file__), 'midtrain_qwen3_0.6b.py')).read())

out_dir = 'out-midtrain-qwen3-dispersion'
wandb_run_name = 'midtrain-qwen3-0.6b-dispersion'
dispersion = 'angular_spread'
dispersion_coeff = 0.1
dispersion_loc = 'all'
dispersion_tau = 1.0
dispersion_clamp = 0.25
dispersion_max_tokens = 256
