"""
sample.py: text from a trained checkpoint or released weights (nanoGPT's sample.py, with a KV cache).

  python sample.py --ckpt out-shakespeare/ckpt.pt --start "ROMEO:" --num_samples 3 --max_new_tokens 200
  python sample.py --init_from gpt2 --start FILE:prompt.txt           # released weights (or a local HF directory)
  python sample.py --init_from Qwen/Qwen3-0.6B --temperature 0        # its own tokenizer; temperature 0 = greedy

Each step samples the next token from softmax(logits / temperature) restricted to the top_k most likely ones
(model.generate). The prompt is encoded with the tokenizer the checkpoint was trained with (the run's config
records it; released weights bring their own), and tokens past the tokenizer's vocabulary (the padding rows of
a 50304-row LM head) are never drawn. With --seed the samples repeat exactly on the same machine.
"""

import argparse
import os
import sys

import torch

import hardware


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ckpt", help="a checkpoint written by train.py, e.g. out/ckpt.pt")
    which.add_argument("--init_from", help="released weights: gpt2..gpt2-xl, Qwen/Qwen3-0.6B.., or a local HF dir")
    p.add_argument("--start", default="\n", help='the prompt, or FILE:prompt.txt to read it from a file')
    p.add_argument("--num_samples", type=int, default=10)
    p.add_argument("--max_new_tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="1 = the model's distribution, 0 = greedy")
    p.add_argument("--top_k", type=int, default=200, help="sample among the k most likely tokens (0 = all)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="autocast dtype on a GPU (default bfloat16 where the GPU has it natively, else float16); "
                   "CPU runs float32")
    return p


def read_prompt(start):
    if start.startswith("FILE:"):
        path = start[len("FILE:"):]
        if not os.path.isfile(path):
            raise SystemExit(f"--start {start}: there is no file {path}.")
        with open(path, encoding="utf-8") as f:
            return f.read()
    return start


def load(args, device):
    """(model in eval mode on device, the name of its tokenizer)."""
    from hf_convert import from_pretrained
    from checkpoint import load_checkpoint
    if args.ckpt:
        try:
            model, _ = load_checkpoint(args.ckpt, device)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(str(e))
    else:
        model = from_pretrained(args.init_from).to(device).eval()
    return model, model.config.tokenizer


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.temperature < 0 or args.num_samples < 1 or args.max_new_tokens < 0 or args.top_k < 0:
        raise SystemExit("--temperature, --top_k and --max_new_tokens must be >= 0 and --num_samples >= 1.")
    if args.device and hardware.device_problem(args.device):
        raise SystemExit(hardware.device_problem(args.device))
    device = hardware.resolve_device(args.device or "auto")  # cuda:1 becomes the current GPU (its RNG is seeded)
    dtype = "float32" if device == "cpu" else hardware.resolve_dtype(args.dtype, device)
    ctx = hardware.autocast(dtype, device)
    torch.manual_seed(args.seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed(args.seed)

    prompt = read_prompt(args.start)
    model, tokenizer_name = load(args, device)
    from data.tokenizer import get_tokenizer
    try:
        tok = get_tokenizer(tokenizer_name)
    except RuntimeError as e:
        raise SystemExit(str(e))
    ids = tok.encode(prompt) or [tok.eot_token]  # an empty prompt starts after an end-of-text token
    x = torch.tensor(ids, dtype=torch.long, device=device)[None].expand(args.num_samples, -1)
    with ctx:
        y = model.generate(x, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k or None,
                           vocab_size=min(tok.n_vocab, model.config.vocab_size))
    for row in y.tolist():
        print(tok.decode(row))
        print("---------------")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
