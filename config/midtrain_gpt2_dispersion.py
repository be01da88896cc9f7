# The paper's GPT-2 mid-training with the dispersion loss (angular_spread, all blocks, lambda 0.1, tau 1,
# clamp 0.1, 256 tokens); everything else as config/midtrain_gpt2.py.
#   torchrun --standalone --nproc_per_node=8 train.py config/midtrain_gpt2_dispersion.py
include('midtrain_gpt2.py')
include('dispersion.py')

out_dir = 'out-midtrain-gpt2-dispersion'
wandb_run_name = 'midtrain-gpt2-dispersion'
