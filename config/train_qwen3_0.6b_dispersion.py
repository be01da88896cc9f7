# The Qwen3-0.6B-shaped model from scratch with the paper's dispersion loss (angular_spread on every block output,
# lambda 0.1, tau 1, clamp 0.25: the paper's Qwen3 setting); everything else as config/train_qwen3_0.6b.py.
#   torchrun --standalone --nproc_per_node=8 train.py config/train_qwen3_0.6b_dispersion.py
# The paper's pre-training applies the loss to block outputs before the final norm; here, as everywhere in this
# code, the last entry of the hidden-state list is after the final norm (Hugging Face's convention).
include('train_qwen3_0.6b.py')
include('dispersion.py')

out_dir = 'out-qwen3-0.6b-dispersion'
wandb_run_name = 'qwen3-0.6b-dispersion'
dispersion_clamp = 0.25  # the paper's Qwen3 setting
