"""
hf_lm.py: any causal language model that transformers loads, as a model eval.py's condensation can measure.

Why a file of its own: eval.py measures through one interface, model.hidden_states(idx) -> the n + 1 hidden
states [B, S, C] (0 = embedding output, n = after the final norm). Our GPT-2 / Qwen3 classes have it; this file
gives it to every other architecture (Llama, Qwen2/2.5, Qwen3, OLMo-2, Bloom, Gemma, GPT-2 itself, ...) through
transformers' own `output_hidden_states`, so that the released models of arXiv 2602.00217 (Fig. 2: GPT-2, Qwen,
Qwen2.5, Qwen3, Bloom; Fig. 5: Qwen2.5-Math / DeepSeek-R1-Distill pairs) are measured with the same statistics
code as our checkpoints.

    python eval.py --init_from Qwen/Qwen2.5-0.5B                        # hub name (or the local hub cache)
    python eval.py --init_from ./my-model                               # a save_pretrained directory
    python eval.py --init_from ./gguf-dir/model-Q8_0.gguf               # a GGUF file (transformers' gguf_file)
    python eval.py --init_from Qwen/Qwen2.5-72B --device_map auto --load_dtype auto   # spread over the GPUs

--load_dtype float32 (default: the authors measured in float32) or auto (the checkpoint's own dtype, e.g. bf16:
2 bytes per parameter instead of 4). The cosine matrices are float32 in either case. --include_logits_layer
appends the [B, S, vocab] logits as one more "layer" (the authors' option), else the LM head never runs.
"""

from types import SimpleNamespace

import torch

from data.tokenizer import hf_location
from hf_hub import hub_offline

# config attributes that bound the positions a model can take (Bloom's ALiBi has none: no bound then)
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length", "n_ctx")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class HFHiddenStates(torch.nn.Module):
    """A transformers causal LM behind eval.py's interface: hidden_states(idx) -> list of [B, S, C] tensors."""

    def __init__(self, hf, tokenizer, name, context, include_logits=False):
        super().__init__()
        self.hf, self.tokenizer, self.include_logits = hf, tokenizer, include_logits
        # what eval.py reads of a model: its length limit and how to tokenise text for it
        self.config = SimpleNamespace(block_size=context or 10**9, tokenizer=name, context=context)
        # without the logits the LM head is skipped (the base model alone): no [B, S, vocab] tensor in memory
        self.body = hf if include_logits else hf.base_model

    def input_device(self):
        """Where the token ids go: the input embedding's device (the first GPU under a device_map)."""
        return self.hf.get_input_embeddings().weight.device

    def encode(self, text, seq_len):
        """Token ids of `text` as the authors' code makes them: tokenizer(text, truncation=True, max_length=S)
        (the tokenizer's own special tokens included, e.g. Llama's BOS)."""
        return self.tokenizer(text, truncation=True, max_length=seq_len)["input_ids"]

    def hidden_states(self, idx):
        idx = idx.to(self.input_device())
        out = self.body(input_ids=idx, attention_mask=torch.ones_like(idx), output_hidden_states=True,
                        use_cache=False, return_dict=True)
        hidden = getattr(out, "hidden_states", None)
        if not hidden:
            raise ValueError(f"{self.config.tokenizer} ({type(self.body).__name__}) returned no hidden states for "
                             f"output_hidden_states=True, so there is nothing to measure.")
        hidden = list(hidden)
        if self.include_logits:
            hidden.append(out.logits)  # cosine of the logit vectors: the authors' --include-logits-layer
        return hidden


class GPT2Tokens:
    """GPT-2's tokenizer (data/tokenizer.py, offline) called the way HFHiddenStates calls a transformers one.
    GPT-2's transformers tokenizer adds no special tokens, so the ids are the same."""

    def __init__(self):
        from data.tokenizer import get_tokenizer
        self.tok = get_tokenizer("gpt2")

    def __call__(self, text, truncation=False, max_length=None):
        ids = self.tok.encode(text)
        return {"input_ids": ids[:max_length] if truncation and max_length else ids}

    def encode(self, text, add_special_tokens=False):
        return self.tok.encode(text)

    def __len__(self):
        return self.tok.n_vocab


def context_length(config):
    """The longest sequence the model's positions allow, or None when its config states none (ALiBi)."""
    for key in CONTEXT_KEYS:
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def load_config(name_or_path, trust_remote_code=False):
    """transformers' config of a hub name / local folder / GGUF file; every failure is one sentence."""
    import transformers
    where, kw = hf_location(name_or_path)
    try:
        config = transformers.AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code, **kw)
    except (OSError, EnvironmentError) as e:
        why = ("offline (HF_HUB_OFFLINE=1, or its host unreachable)" if hub_offline() else
               "unreachable or has no such model")
        raise SystemExit(f"Could not read '{name_or_path}': not a local model folder, and the Hugging Face hub is "
                         f"{why}; download it where there is internet (save_pretrained) and pass the folder. "
                         f"({str(e).splitlines()[0][:200]})") from None
    except (ValueError, KeyError) as e:  # an unknown model_type, remote code not trusted, a malformed config
        raise SystemExit(f"transformers {transformers.__version__} cannot load '{name_or_path}': "
                         f"{str(e).splitlines()[0][:300]} (newer transformers, or --trust_remote_code for a model "
                         f"with its own code).") from None
    if type(config) not in transformers.MODEL_FOR_CAUSAL_LM_MAPPING and not getattr(config, "auto_map", None):
        raise SystemExit(f"'{name_or_path}' is a {config.model_type} model, which transformers cannot load as a "
                         f"causal LM (AutoModelForCausalLM); condensation is measured on causal LMs.")
    return config, where, kw


def load(name_or_path, seq_len, dtype="float32", device="cpu", device_map=None, include_logits=False,
         trust_remote_code=False):
    """HFHiddenStates of `name_or_path` in eval mode. Refuses (SystemExit, one sentence) before loading any weight
    when seq_len exceeds the model's context."""
    import transformers
    config, where, kw = load_config(name_or_path, trust_remote_code)
    context = context_length(config)
    if context is not None and seq_len > context:
        raise SystemExit(f"--seq_len {seq_len} is longer than {name_or_path}'s context of {context} positions; "
                         f"give --seq_len {context} or less.")
    if dtype not in DTYPES:
        raise SystemExit(f"--load_dtype {dtype}: choose one of {', '.join(DTYPES)} for a transformers model.")
    tokenizer, error = None, None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code, **kw)
    except Exception as e:  # no tokenizer files, sentencepiece missing, hub off: the same for the user
        error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    if tokenizer is None or len(tokenizer) < 2:  # transformers 5 builds an empty one from a folder without files
        if config.model_type != "gpt2":
            raise SystemExit(f"Could not load the tokenizer of '{name_or_path}' ({error or 'no tokenizer files'}); "
                             f"save it beside the model (AutoTokenizer ... save_pretrained).")
        tokenizer = GPT2Tokens()  # a GPT-2 folder without tokenizer files: GPT-2's own, offline
    placement = {"device_map": device_map} if device_map else {}
    try:
        hf = transformers.AutoModelForCausalLM.from_pretrained(where, dtype=DTYPES[dtype],
                                                               trust_remote_code=trust_remote_code,
                                                               **placement, **kw)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise SystemExit(f"Could not load the weights of '{name_or_path}' ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:300] if str(e) else ''}).") from None
    if not device_map:
        hf = hf.to(device)
    return HFHiddenStates(hf.eval(), tokenizer, name_or_path, context, include_logits)


def provenance(model):
    """What identifies the weights measured: the hub commit (when known), class, dtype, library versions."""
    import transformers
    hf = model.hf
    return {"model_class": type(hf).__name__, "model_type": hf.config.model_type,
            "model_revision": getattr(hf.config, "_commit_hash", None), "model_dtype": str(hf.dtype).split(".")[-1],
            "transformers": transformers.__version__,
            "torch": torch.__version__}
