"""
tasks/: score models on lm-evaluation-harness tasks (the paper's benchmark table) as lm-eval 0.4 scores them.

  definitions.py     the tasks, their prompts and metrics: the one file to edit to add a task
  engine.py          few-shot sampling, the batched log-likelihood engine, data loading, run_benchmarks
  results.py         tasks.json / tasks.md, the paper-layout table, --compare
  lm_eval_adapter.py our models as an lm-eval model ("disperse-gpt")
  download.py        save the task data for an offline machine: python -m tasks.download --out DIR

The command line is eval.py's: python eval.py --ckpt out/ckpt.pt --tasks paper
"""
