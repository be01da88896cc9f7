# config/midtrain_smollm2.py with LoRA instead of full fine-tuning, the authors' option (--lora in their
# mid-training scripts): rank 16, alpha 32, dropout 0.05 on c_attn, c_proj, c_fc (q/k/v, the attention and MLP
# outputs, the MLP input), the base frozen (lora.py): 4,055,040 trainable of 138,570,048 parameters.
# Measured with config/dispersion.py on one thread of a shared 2-core CPU: 12.8 s per step (80 tokens/s).
#   OMP_NUM_THREADS=1 python train.py config/midtrain_smollm2_lora.py
#   OMP_NUM_THREADS=1 python train.py config/midtrain_smollm2_lora.py config/dispersion.py --out_dir=out-midtrain-smollm2-lora-dispersion
include('midtrain_smollm2.py')

out_dir = 'out-midtrain-smollm2-lora'
wandb_run_name = 'midtrain-smollm2-lora'
lora_rank = 16
lora_alpha = 32.0
lora_targets = 'c_attn,c_proj,c_fc'
lora_dropout = 0.05
