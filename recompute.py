"""
recompute.py: recompute a result of eval.py independently of this codebase's model and statistics code:
transformers' own model for the forward pass, numpy (float64) for the cosines, a float64
cross-entropy of transformers' logits for the losses.

    python recompute.py RESULT.json MODEL          # MODEL: a transformers folder or a .gguf file
    python recompute.py out-real/midtrain/ce_s1/eval/condensation_lee-news_S512_N100.json out-real/midtrain/ce_s1/hf
    python recompute.py out-real/midtrain/ce_s1/eval/loss_lee_news_smollm2.json out-real/midtrain/ce_s1/hf

A loss result (eval.py --loss_data) is recomputed from its token file: `windows` windows of `block_size` tokens at
the starts floor(linspace(0, n - block_size - 1, windows)) (n tokens in the split), the mean over windows of the
mean next-token cross-entropy of all T positions (as train.py); it must equal the result's loss to --tol.

For a checkpoint of ours, MODEL is its transformers export (python eval.py --export_hf RUN/ckpt.pt RUN/hf). The
result JSON names its windows file (eval.py writes the token ids of every window beside it); for every hidden
state l = 0..n and every window, with z_i the rows of the [S, C] hidden states,
    C_ij = <z_i, z_j> / (max(|z_i|, 1e-3) max(|z_j|, 1e-3))      (arXiv 2602.00217 section 2)
and mu_l = the mean of C over all S*S entries and all windows. Prints mu_l beside the JSON's and the largest
difference; exits 1 when it exceeds --tol (default 1e-4: float32 forwards of two implementations differ by ~1e-6
in the hidden states, the cosine mean by far less than 1e-4).
"""

import argparse
import json
import os
import sys

import numpy as np


def layer_means(hidden):
    """[S, C] float hidden states of one window -> mean of its S x S cosine matrix, in float64."""
    z = np.asarray(hidden, dtype=np.float64)
    assert z.ndim == 2, z.shape
    u = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-3)
    return float(np.clip(u @ u.T, -1.0, 1.0).mean())


def load_transformers(model):
    import torch
    from transformers import AutoModelForCausalLM
    if model.endswith(".gguf"):
        folder, name = os.path.split(os.path.abspath(model))
        hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    else:
        hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    return hf.eval()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result", help="a condensation_*.json written by eval.py")
    p.add_argument("model", help="the model it measured: a transformers folder or a .gguf file")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--max_windows", type=int, default=None, help="recompute only the first N windows' mean")
    args = p.parse_args(argv)
    import torch
    with open(args.result) as f:
        result = json.load(f)
    if "loss" in result and "data" in result:
        return loss_check(result, args)
    if not result.get("windows_file"):
        raise SystemExit(f"{args.result} names no windows file: measure again with the current eval.py.")
    windows = np.load(os.path.join(os.path.dirname(args.result), result["windows_file"]))["input_ids"]
    if args.max_windows:
        windows = windows[:args.max_windows]
    hf = load_transformers(args.model)
    sums = None
    with torch.no_grad():
        for row in windows:
            out = hf.model if hasattr(hf, "model") else hf.base_model
            hs = out(input_ids=torch.as_tensor(row[None], dtype=torch.long), output_hidden_states=True).hidden_states
            means = np.array([layer_means(h[0].numpy()) for h in hs])
            sums = means if sums is None else sums + means
    mu = sums / len(windows)
    if args.max_windows:
        print(f"{len(windows)} of the result's {result['num_sequences']} windows: the means differ from the "
              f"result's by sampling as well")
    theirs = np.array(result["mean_cos"])
    if len(theirs) != len(mu):
        raise SystemExit(f"{args.result} has {len(theirs)} layers, the model {len(mu)}: not the model it measured.")
    for l, (a, b) in enumerate(zip(mu, theirs)):
        print(f"{l:4d}  {a:.6f}  {b:.6f}  {a - b:+.1e}")
    worst = float(np.abs(mu - theirs).max())
    print(f"max |recomputed - result| = {worst:.2e} over {len(mu)} hidden states ({len(windows)} windows)")
    return 0 if worst <= args.tol or args.max_windows else 1


def loss_check(result, args):
    import torch
    data = result["data"]
    with open(os.path.join(data, "meta.json")) as f:
        dtype = json.load(f)["dtype"]
    tokens = np.memmap(os.path.join(data, f"{result.get('split', 'val')}.bin"), dtype=dtype, mode="r")
    T, num = result["block_size"], result["windows"]
    starts = np.linspace(0, len(tokens) - T - 1, num).astype(np.int64)
    hf = load_transformers(args.model)
    losses = []
    with torch.no_grad():
        for s in starts:
            x = torch.as_tensor(np.asarray(tokens[s:s + T + 1], dtype=np.int64))[None]
            out = hf(input_ids=x[:, :T])
            logits = out.logits[0].double()
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:T + 1])  # all T next tokens, as train.py
            losses.append(float(nll))
    loss = float(np.mean(losses))
    print(f"loss over {num} windows of {T} tokens of {data}: recomputed {loss:.6f}, result {result['loss']:.6f}, "
          f"difference {loss - result['loss']:+.1e}")
    return 0 if abs(loss - result["loss"]) <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
