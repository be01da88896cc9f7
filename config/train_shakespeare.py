# The quick start: a small GPT-2-style model on Shakespeare (data/shakespeare, 1.41M train tokens), on a laptop CPU.
#   python data/shakespeare/prepare.py && python train.py config/train_shakespeare.py
# 16 windows x 128 tokens = 2,048 tokens per step; 600 steps = 1.2M tokens, about one pass over the plays.
out_dir = 'out-shakespeare'
dataset = 'shakespeare'
eval_interval = 100
eval_iters = 10  # 10 x 16 = 160 fixed val windows
log_interval = 10
always_save_checkpoint = False  # keep the checkpoint with the best val loss

gradient_accumulation_steps = 1
batch_size = 16
block_size = 128

# 4 layers, 4 heads, 128 wide: 0.8M parameters in the blocks, 6.4M in the tied 50304 x 128 token table
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.1

learning_rate = 2e-3  # a small model takes a large rate
max_iters = 600
warmup_iters = 30
lr_decay_iters = 600
min_lr = 2e-4
beta2 = 0.99  # few tokens per step
probe_windows = 8

device = 'cpu'
compile = False
