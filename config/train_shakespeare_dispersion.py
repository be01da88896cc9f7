# The quick start with the dispersion loss on: config/train_shakespeare.py plus the paper's recommended settings.
#   python train.py config/train_shakespeare_dispersion.py
#   python eval.py --compare out-shakespeare/eval/condensation.json out-shakespeare-dispersion/eval/condensation.json
import os
exec(open(os.path.join(os.path.dirname(__file__), 'train_shakespeare.py')).read())
exec(open(os.path.join(os.path.dirname(__file__), 'dispersion.py')).read())

out_dir = 'out-shakespeare-dispersion'
