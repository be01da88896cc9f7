# The quick start: a small GPT-2-style model on Shakespeare (data/shakespeare, 1.41M train tokens), on a laptop CPU.
#   python data/shakespeare/prepare.py && python train.py config/train_shakespeare.py
# 8 windows x 128 tokens = 1,024 tokens per step; 320 steps = 328k tokens, a quarter of the plays: about 5 minutes
# on 2 CPU cores (0.8 s per step: the 50304 x 128 LM head is most of the 6 * 7.2M * 1024 = 44 GFLOP per step).
out_dir = 'out-shakespeare'
dataset = 'shakespeare'
eval_interval = 80
eval_iters = 10  # 10 x 8 = 80 fixed windows of each split
log_interval = 10
always_save_checkpoint = False  # keep the checkpoint with the best val loss

gradient_accumulation_steps = 1
batch_size = 8
block_size = 128

# 4 layers, 4 heads, 128 wide: 0.8M parameters in the blocks, 6.4M in the tied 50304 x 128 token table
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.1

learning_rate = 2e-3  # a small model takes a large rate
max_iters = 320
warmup_iters = 30
lr_decay_iters = 320
min_lr = 2e-4
beta2 = 0.99  # few tokens per step
probe_windows = 8

device = 'cpu'
compile = False
