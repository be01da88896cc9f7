# The quick start with the dispersion loss on: config/train_shakespeare.py plus the paper's recommended settings.
#   python train.py config/train_shakespeare_dispersion.py
#   python eval.py --compare out-shakespeare/eval/condensation.json out-shakespeare-dispersion/eval/condensation.json
include('train_shakespeare.py')
include('dispersion.py')

out_dir = 'out-shakespeare-dispersion'
