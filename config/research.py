# The CPU research shape of the reproduction (experiments.py; README "Results"): every CPU-scale result uses it.
#   python train.py config/research.py --seed=1 --out_dir=out-research/ce_s1                         # CE only
#   python train.py config/research.py config/dispersion.py --dispersion_coeff=1.0 --seed=1 --out_dir=...
# A 6-layer, 192-wide GPT-2 on Shakespeare (data/shakespeare): 2.7M parameters in the blocks, 9.7M in the tied
# 50304 x 192 token table. 8 windows x 128 tokens = 1,024 tokens per step; 300 steps = 307k tokens (a fifth of
# the plays). FLOPs per step ~ 6 * 12.3M * 1024 = 76 GFLOP, three quarters of them in the LM head: about
# 1.4 s per step on one CPU thread, so two runs side by side finish in ~8 minutes.
dataset = 'shakespeare'
batch_size = 8
block_size = 128
gradient_accumulation_steps = 1

model_type = 'gpt'
n_layer = 6
n_head = 6
n_embd = 192
n_inner = 0  # 4 * 192 = 768; the MLP-width sweep overrides it (--n_inner=16/64/256/1024: the paper's 64..4096 / 768)
dropout = 0.0  # as in pre-training: dropout would blur the comparison of the losses

learning_rate = 1e-3
max_iters = 300
warmup_iters = 30
lr_decay_iters = 300
min_lr = 1e-4
beta2 = 0.99  # few tokens per step
weight_decay = 0.1
grad_clip = 1.0

eval_interval = 50  # 7 evals (0, 50, .., 300): val loss and the condensation probe, the curves of Fig. 4
eval_iters = 10  # 10 x 8 = 80 fixed windows of each split (10,240 tokens), the same windows in every run
log_interval = 10
always_save_checkpoint = True  # ckpt.pt is the latest state, so an interrupted run resumes where it stopped
probe_windows = 16

device = 'cpu'
dtype = 'float32'
compile = False
seed = 1
