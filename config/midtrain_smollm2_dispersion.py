# config/midtrain_smollm2.py with the paper's dispersion loss (angular_spread on all blocks, lambda 0.1, tau 1,
# clamp 0.1, 256 tokens): the paper's mid-training comparison on a released model, at CPU scale.
#   python train.py config/midtrain_smollm2_dispersion.py [--dispersion_coeff=1.0]
include('midtrain_smollm2.py')
include('dispersion.py')

out_dir = 'out-midtrain-smollm2-dispersion'
