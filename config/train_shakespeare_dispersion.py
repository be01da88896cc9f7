# The quick start with the dispersion loss on: config/train_shakespeare.py plus the paper's recommended settings.
#   python train.py config/train_shakespeare_dispersion.py
#   python eval.py --compare out-shakespeare/eval/condensation.json out-shakespeare-dispersion/eval/condensation.json
import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_shakespeare.py')).read())

out_dir = 'out-shakespeare-dispersion'
dispersion = 'angular_spread'
dispersion_coeff = 0.1
dispersion_loc = 'all'
dispersion_tau = 1.0
dispersion_clamp = 0.1
dispersion_max_tokens = 256  # more than block_size here: every token is used
