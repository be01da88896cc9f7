# The paper's GPT-2 mid-training with the dispersion loss (angular_spread, all blocks, lambda 0.1, tau 1,
# clamp 0.1, 256 tokens); everything else as config/midtrain_gpt2.py.
#   torchrun --standalone --nproc_per_node=8 train.py config/midtrain_gpt2_dispersion.py
import os
exec(open(os.path.join(os.path.dirname(__file__), 'midtrain_gpt2.py')).read())

out_dir = 'out-midtrain-gpt2-dispersion'
wandb_run_name = 'midtrain-gpt2-dispersion'
dispersion = 'angular_spread'
dispersion_coeff = 0.1
dispersion_loc = 'all'
dispersion_tau = 1.0
dispersion_clamp = 0.1
dispersion_max_tokens = 256
