# GPT-2 124M from scratch on OpenWebText with the paper's dispersion loss (angular_spread on every block output,
# lambda 0.1, tau 1, clamp 0.1, 256 sampled tokens): the run the README opens with.
#   torchrun --standalone --nproc_per_node=8 train.py config/gpt2_dispersion.py
#   python eval.py --ckpt out/ckpt.pt
# Same data, batch and schedule as config/train_gpt2.py (491,520 tokens per step), which it is compared with.
# Extra cost: per block, the 256 x 256 cosine matrix of each sequence: 12 layers * 2 * 256^2 * 768 FLOPs
# = 1.2 GFLOP per sequence forward, ~0.2% of the model's 6 * 124M * 1024 = 760 GFLOP per sequence.
import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_gpt2.py')).read())

out_dir = 'out'
wandb_run_name = 'gpt2-124M-dispersion'
dispersion = 'angular_spread'
dispersion_coeff = 0.1
dispersion_loc = 'all'
dispersion_tau = 1.0
dispersion_clamp = 0.1
dispersion_max_tokens = 256
