# The quick start with the dispersion loss on: config/train_shakespeare.py plus the paper's recommended settings.
#   python train.py config/train_shakespeare_dispersion.py
#   python eval.py --ckpt out-shakespeare-dispersion/ckpt.pt    # as the quick start's for out-shakespeare
#   python eval.py --compare out-shakespeare/eval/condensation_val_S128_N100.json \
#       out-shakespeare-dispersion/eval/condensation_val_S128_N100.json
include('train_shakespeare.py')
include('dispersion.py')

out_dir = 'out-shakespeare-dispersion'
