"""
tasks/lm_eval_adapter.py: our models as an lm-evaluation-harness model named "disperse-gpt".

  python eval.py --lm_eval run --model disperse-gpt --model_args ckpt=out/ckpt.pt --tasks hellaswag
  lm = register_lm_eval()(model=model, tokenizer=tokenizer)     # a model already in memory, from Python

lm-eval is imported only inside these functions, so it stays an optional dependency (pip install lm-eval
accelerate). Log-likelihoods go through tasks/engine.py's batched engine; generation is greedy.
"""

import sys
from contextlib import nullcontext

import torch

import hardware

from checkpoint import load_checkpoint
from data.tokenizer import get_tokenizer
from hf_convert import from_pretrained
from tasks.engine import bos_or_eot, loglikelihoods
from tasks.rolling import rolling_loglikelihoods

_LM_CLASS = None


def register_lm_eval():
    """Register our models with lm-eval's registry as 'disperse-gpt' and return the class (lm-eval is
    imported only here, so it stays an optional dependency). model_args: ckpt=out/ckpt.pt or
    init_from=gpt2|Qwen/Qwen3-0.6B|HF dir (alias pretrained=); device; batch_tokens; dtype (float32|bfloat16).
    From Python: DisperseLM(model=model, tokenizer=tokenizer) for a model already in memory."""
    global _LM_CLASS
    if _LM_CLASS is not None:
        return _LM_CLASS
    import lm_eval.models  # noqa: F401  the built-in models first: lm-eval fills its registry only when empty
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model

    @register_model("disperse-gpt")
    class DisperseLM(TemplateLM):
        def __init__(self, ckpt=None, init_from=None, pretrained=None, device=None, batch_tokens=None,
                     dtype=None, model=None, tokenizer=None, **kwargs):
            super().__init__()
            device = hardware.resolve_device(device or "auto")
            if model is None:  # from the command line: model_args name a checkpoint or released weights
                if not (ckpt or init_from or pretrained):
                    raise ValueError("disperse-gpt needs model_args ckpt=out/ckpt.pt or init_from=gpt2.")
                model = (load_checkpoint(ckpt, device)[0] if ckpt else
                         from_pretrained(init_from or pretrained).to(device))
                tokenizer = get_tokenizer(model.config.tokenizer)
            self.model, self.tokenizer_ = model.eval(), tokenizer
            self.batch_tokens = int(batch_tokens) if batch_tokens else None
            self.autocast = None if dtype in (None, "float32") else hardware.autocast(dtype, device)

        @property
        def eot_token_id(self):
            return self.tokenizer_.eot_token

        @property
        def prefix_token_id(self):  # what an empty context and a first perplexity window start with
            return bos_or_eot(self.tokenizer_)

        @property
        def max_length(self):
            return self.model.config.block_size

        def tok_encode(self, string, add_special_tokens=None, **kwargs):
            return self.tokenizer_.encode(string)

        def tok_decode(self, tokens, **kwargs):
            return self.tokenizer_.decode(tokens)

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
            return loglikelihoods(self.model, [(ctx, cont) for _, ctx, cont in requests], self.max_length,
                                  self.batch_tokens, self.autocast, progress=not disable_tqdm)

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            return rolling_loglikelihoods(self.model, self.tok_encode, self.prefix_token_id,
                                          [req.args[0] for req in requests], self.max_length, self.batch_tokens,
                                          self.autocast, progress=not disable_tqdm)

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for req in requests:  # greedy, one at a time: generation is not what this adapter is for
                context, kwargs = req.args
                until = kwargs.get("until") or [self.tokenizer_.decode([self.eot_token_id])]
                until = [until] if isinstance(until, str) else until
                ids = self.tok_encode(context)[-self.max_length:]
                idx = torch.tensor([ids], device=next(self.model.parameters()).device)
                n_new = int(kwargs.get("max_gen_toks", 256))
                with torch.no_grad(), (self.autocast or nullcontext()):
                    y = self.model.generate(idx, n_new, temperature=1.0, top_k=1)
                text = self.tokenizer_.decode(y[0, len(ids):].tolist())
                for stop in until:
                    text = text.split(stop)[0]
                out.append(text)
            return out

    _LM_CLASS = DisperseLM
    return DisperseLM


def cli(argv):
    """`python eval.py --lm_eval run --model disperse-gpt --model_args ckpt=out/ckpt.pt --tasks hellaswag`:
    lm-eval's own command line, with our model registered first (lm-eval has no plugin discovery)."""
    try:
        register_lm_eval()
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise SystemExit("--lm_eval needs lm-evaluation-harness: pip install lm-eval.")
    sys.argv = ["lm-eval"] + list(argv)
    cli_evaluate()
