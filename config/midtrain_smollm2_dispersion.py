# config/midtrain_smollm2.py with the paper's dispersion loss (angular_spread, all blocks, lambda 0.1, tau 1,
# clamp 0.1, 256 tokens).
#   OMP_NUM_THREADS=1 python train.py config/midtrain_smollm2_dispersion.py
include('midtrain_smollm2.py')
include('dispersion.py')

out_dir = 'out-midtrain-smollm2-dispersion'
wandb_run_name = 'midtrain-smollm2-dispersion'
