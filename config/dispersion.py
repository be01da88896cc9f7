# The paper's recommended dispersion loss (section 3), to add to any run:
#   python train.py config/train_shakespeare.py config/dispersion.py
# angular_spread on every block output (the last after the final norm), lambda 0.1, tau 1, clamp t = 0.1
# (0.1 in the paper's GPT-2 runs, 0.25 for Qwen3), 256 token positions sampled per sequence and layer.
dispersion = 'angular_spread'
dispersion_coeff = 0.1
dispersion_loc = 'all'
dispersion_tau = 1.0
dispersion_clamp = 0.1
dispersion_max_tokens = 256
