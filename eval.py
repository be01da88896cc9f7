"""
eval.py: measure a checkpoint (or a released GPT-2 / Qwen3 model).

Two measurements, both from the command line:
  python eval.py --ckpt out/ckpt.pt                        # embedding condensation (paper section 2)
  python eval.py --ckpt out/ckpt.pt --benchmarks paper     # the paper's 10 benchmarks, scored as lm-eval does

(skeleton: the sections below are filled in by the condensation and benchmark work)
"""

# -----------------------------------------------------------------------------
# condensation: per-layer token cosine similarity


# -----------------------------------------------------------------------------
# benchmarks: lm-evaluation-harness style multiple-choice scoring


# -----------------------------------------------------------------------------
# command line

def main(argv=None):
    raise SystemExit("eval.py is not implemented yet")


if __name__ == "__main__":
    main()
