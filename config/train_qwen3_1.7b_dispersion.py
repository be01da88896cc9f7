# config/train_qwen3_1.7b.py plus the paper's dispersion loss: angular_spread on every block, lambda 0.1, tau 1,
# clamp 0.25 (the paper's Qwen3 setting), 256 token positions per sequence and layer.
#   torchrun --standalone --nproc_per_node=8 train.py config/train_qwen3_1.7b_dispersion.py
include('train_qwen3_1.7b.py')
include('dispersion.py')

out_dir = 'out-qwen3-1.7b-dispersion'
wandb_run_name = 'qwen3-1.7b-dispersion'
dispersion_clamp = 0.25  # the paper's Qwen3 setting
