# GPT-2 124M from scratch on OpenWebText with the paper's dispersion loss (angular_spread on every block output,
# lambda 0.1, tau 1, clamp 0.1, 256 sampled tokens): the run the README opens with.
#   torchrun --standalone --nproc_per_node=8 train.py config/gpt2_dispersion.py
#   python eval.py --ckpt out-gpt2-dispersion/ckpt.pt
# Same data, batch and schedule as config/train_gpt2.py (491,520 tokens per step), which it is compared with.
# Extra cost: per block, the 256 x 256 cosine matrix of each sequence: 12 layers * 2 * 256^2 * 768 FLOPs
# = 1.2 GFLOP per sequence forward, ~3.6 with backward: ~0.5% of the model's 6 * 124M * 1024 = 760 GFLOP.
include('train_gpt2.py')
include('dispersion.py')

out_dir = 'out-gpt2-dispersion'
wandb_run_name = 'gpt2-124M-dispersion'
