# The quick start with a small Qwen3-style model (RMSNorm, RoPE, QK-norm, GQA, SwiGLU) of about the same size as
# config/train_shakespeare.py's GPT: 4 layers, 128 wide, 4 query heads over 2 KV heads of 32, SwiGLU 384.
#   python train.py config/train_shakespeare_qwen3.py
include('train_shakespeare.py')

out_dir = 'out-shakespeare-qwen3'
model_type = 'qwen3'
n_kv_head = 2
head_dim = 32
n_inner = 384
dropout = 0.0
