"""
bench_released.py: one mid-training step of a released model, ours against transformers' own model, same weights,
same batch, interleaved in one process (timings, not tests).

  python data/released.py smollm2-135m                # the weights (SmolLM2-135M-Instruct, a Q4_1 GGUF)
  python bench.py --what=released                     # = python bench_released.py
  python bench_released.py --threads=1,2 --steps=3 --batch_size=2 --block_size=512

A step is what midtrain.py's runs do (config/midtrain_smollm2.py): forward over batch_size x block_size tokens,
cross-entropy (+ 0.1 x angular_spread on every block's hidden states, the paper's setting, with --dispersion),
backward, AdamW step on the trainable parameters, in float32. Four settings, each on both models:
  ce             full fine-tuning, cross-entropy only
  ce+disp        full fine-tuning, with the dispersion loss (transformers: output_hidden_states=True, the same
                 disperse() on its n+1 hidden states, whose convention ours follows)
  lora           rank 16, alpha 32, dropout 0.05 (config/midtrain_smollm2_lora.py), base weights frozen
  lora+disp      the same with the dispersion loss
LoRA on transformers' model: the same LoRALinear (lora.py) on its q/k/v/o and gate/up/down projections, the
layers that our fused c_attn / c_proj / c_fc hold (transformers has no adapters of its own; peft is not a
requirement here). Ours has one rank-16 adapter on the fused q|k|v and one on gate|up where transformers' has
one per projection, so its adapters hold more parameters (printed): the frozen base dominates either way.

Timing: each model lives in a process of its own, as in a training run (in one shared process, each model's step
would find the heap as the other's step left it, and which of the two paid for fresh pages changed from run to
run). Each round runs one step of every (setting, model) pair in turn, after two untimed warm-up steps each (the
first allocates AdamW's moments; the second still pays one-time costs: alone in a fresh process, the second
forward of either model took 2.3-2.6x the later ones), so a slow moment of a shared machine hits both models;
within a setting the model that goes first alternates from round to round (ours in even rounds, transformers in
odd ones). The median over rounds is reported (use an even --steps), and the ratio ours / transformers (below 1.0:
ours is faster); every round's times are printed too. Both processes run with glibc keeping freed memory
(hardware.keep_freed_memory, as train.py does on CPU); --keep_freed_memory=0 measures with glibc's default.
Peak memory: a fresh process per (setting, model), the peak
resident set over its steps (VmHWM, reset after loading through /proc/self/clear_refs), so weights, gradients,
AdamW's moments and activations, but not the loading's own transient.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import hardware
import lora
from disperse import disperse
from hf_convert import from_pretrained

MODEL = os.path.join(os.path.expanduser('~'), '.cache', 'disperse-gpt', 'released', 'SmolLM2-135M-Instruct.Q4_1.gguf')
SETTINGS = {'ce': (False, False), 'ce+disp': (False, True), 'lora': (True, False), 'lora+disp': (True, True)}
HF_TARGETS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')  # = c_attn, c_proj, c_fc
LORA = dict(rank=16, alpha=32.0, dropout=0.05)


def load_hf(path):
    """transformers' own model of the same weights (float32; a .gguf is dequantized as from_pretrained does)."""
    from transformers import AutoModelForCausalLM
    from hf_lm import load_config
    _, where, kw = load_config(os.path.expanduser(path))
    return AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kw)


def hf_lora(hf):
    """LoRALinear on transformers' projections (HF_TARGETS), everything else frozen -> number of adapter parameters."""
    hf.requires_grad_(False)
    n = 0
    for layer in hf.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in HF_TARGETS:
                if hasattr(parent, name):
                    wrapped = lora.LoRALinear(getattr(parent, name), **LORA)
                    setattr(parent, name, wrapped)
                    n += wrapped.lora_A.numel() + wrapped.lora_B.numel()
    return n


def ours_lora(model):
    lora.apply_lora(model, targets=lora.AUTHORS_TARGETS, **LORA)
    return lora.trainable_params(model)[0]


def step_fn(model, is_hf, disp, x, y):
    """One training step's closure: forward, loss, backward, AdamW step (a fresh AdamW over the trainable
    parameters, its moments allocated at the first step, as in a run)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5, betas=(0.9, 0.95),
                            weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)

    def step():
        if is_hf:  # the same cross-entropy as ours, over every position's next token y
            out = model(input_ids=x, output_hidden_states=disp)
            loss = F.cross_entropy(out.logits.flatten(0, 1), y.flatten())
            hidden = out.hidden_states
        else:
            _, loss, hidden = model(x, y, return_hidden=True) if disp else (*model(x, y), None)
        if disp:
            loss = loss + 0.1 * disperse(list(hidden), loc='all', variant='angular_spread', tau=1.0, clamp=0.1,
                                         max_tokens=256, generator=gen)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def batch(vocab, batch_size, block_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, vocab, (batch_size, block_size + 1), generator=g)
    return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()


def round_order(settings, r):
    """The (setting, model) pairs of round r: settings in turn, ours first in even rounds, transformers in odd."""
    models = ('ours', 'hf') if r % 2 == 0 else ('hf', 'ours')
    return [(s, m) for s in settings for m in models]


def _worker(conn, which, path, batch_size, block_size, keep):
    """One model in a process of its own, as a training run has it (its own heap: in one shared process each
    model's step would find the heap as the other model's step left it), stepping when the parent says:
    ('setup', (setting, threads)) a fresh AdamW for that setting, ('step', setting) -> (seconds, loss),
    ('lora', None) -> adapter parameters, ('stop', None)."""
    try:
        if keep:
            hardware.keep_freed_memory()
        model = load_hf(path) if which == 'hf' else from_pretrained(path)
        model.train()
        x, y = batch(model.config.vocab_size, batch_size, block_size)
        steps_of = {}
        while True:
            cmd, arg = conn.recv()
            if cmd == 'stop':
                return
            if cmd == 'lora':
                conn.send(hf_lora(model) if which == 'hf' else ours_lora(model))
            elif cmd == 'setup':
                setting, threads = arg
                torch.set_num_threads(threads)
                steps_of[setting] = step_fn(model, which == 'hf', SETTINGS[setting][1], x, y)
                conn.send(None)
            elif cmd == 'step':
                t0 = time.perf_counter()
                loss = steps_of[arg]()
                conn.send((time.perf_counter() - t0, loss))
    except (EOFError, BrokenPipeError):  # the parent has gone: nothing to tell
        return
    except Exception as e:  # the parent says it in one sentence
        conn.send(('error', f'{type(e).__name__}: {e}'))


def timings(path, threads, steps, batch_size, block_size, settings=tuple(SETTINGS), keep=True):
    """-> ({(setting, threads): {'ours': s, 'hf': s}} medians, interleaved; {(setting, threads): {'ours': loss,
    'hf': loss}} of the first warm-up step, which equal each other when both models do the same step; LoRA adapter
    parameter counts). One process per model, the parent telling each in turn to take a step. Full fine-tuning
    settings first, then LoRA (added in place, to both models)."""
    import multiprocessing
    ctx = multiprocessing.get_context('spawn')
    pipes, procs = {}, []
    for name in ('ours', 'hf'):
        parent, child = ctx.Pipe()
        procs.append(ctx.Process(target=_worker, args=(child, name, path, batch_size, block_size, keep), daemon=True))
        procs[-1].start()
        child.close()  # the worker's end lives in the worker: its exit is then an EOFError here, not a hang
        pipes[name] = parent

    def call(name, cmd, arg=None):
        pipes[name].send((cmd, arg))
        try:
            answer = pipes[name].recv()
        except EOFError:
            answer = ('error', 'the process ended (out of memory?)')
        if isinstance(answer, tuple) and answer[:1] == ('error',):
            raise SystemExit(f"The {name} model's process failed: {answer[1]}")
        return answer

    results, losses, counts = {}, {}, {}
    try:
        for adapters in (False, True):
            chosen = [s for s, (a, _) in SETTINGS.items() if a == adapters and s in settings]
            if not chosen:
                continue
            if adapters:
                counts = {name: call(name, 'lora') for name in pipes}
            for t in threads:
                for s in chosen:
                    for name in pipes:
                        call(name, 'setup', (s, t))
                # warm-up: first-call costs and AdamW's moments, then the second step's one-time costs (docstring)
                warm = {(s, name): call(name, 'step', s)[1] for s in chosen for name in pipes}
                for s in chosen:
                    for name in pipes:
                        call(name, 'step', s)
                times = {k: [] for k in warm}
                for r in range(steps):
                    for s, name in round_order(chosen, r):
                        times[(s, name)].append(call(name, 'step', s)[0])
                for s in chosen:
                    results[(s, t)] = {name: statistics.median(times[(s, name)]) for name in ('ours', 'hf')}
                    losses[(s, t)] = {name: warm[(s, name)] for name in ('ours', 'hf')}
                    print(f"  {s:<10} {t} thread(s): ours {results[(s, t)]['ours']:.2f} s, transformers "
                          f"{results[(s, t)]['hf']:.2f} s (first step's loss: ours {losses[(s, t)]['ours']:.6f}, "
                          f"transformers {losses[(s, t)]['hf']:.6f}); rounds: ours "
                          + ' '.join(f'{v:.2f}' for v in times[(s, 'ours')]) + ', transformers '
                          + ' '.join(f'{v:.2f}' for v in times[(s, 'hf')]), flush=True)
    finally:
        for pipe in pipes.values():
            try:
                pipe.send(('stop', None))
            except (BrokenPipeError, OSError):
                pass
        for proc in procs:
            proc.join(timeout=60)
    return results, losses, counts


def peak_memory(path, setting, which, steps, batch_size, block_size, keep):
    """Peak resident memory (GiB) of a fresh process over `steps` steps of one (setting, model), one thread."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), '--_memory', f'{setting},{which}',
                          f'--model={path}', f'--steps={steps}', f'--batch_size={batch_size}',
                          f'--block_size={block_size}', f'--keep_freed_memory={keep}'], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    if out.returncode != 0:
        raise SystemExit(f"The memory measurement of {which} {setting} failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])['peak_gib']


def _vm(key):
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 2 ** 20  # kB -> GiB


def _memory_child(spec, path, steps, batch_size, block_size):
    setting, which = spec.split(',')
    adapters, disp = SETTINGS[setting]
    model = load_hf(path) if which == 'hf' else from_pretrained(path)
    if adapters:
        hf_lora(model) if which == 'hf' else ours_lora(model)
    model.train()
    x, y = batch(model.config.vocab_size, batch_size, block_size)
    fn = step_fn(model, which == 'hf', disp, x, y)
    with open('/proc/self/clear_refs', 'w') as f:  # '5' resets VmHWM to the current resident set (Linux >= 4.0)
        f.write('5')
    for _ in range(steps):
        fn()
    print(json.dumps({'peak_gib': _vm('VmHWM:')}))


def table(results, memory, counts, batch_size, block_size):
    tokens = batch_size * block_size
    lines = ["| setting | threads | ours tok/s | transformers tok/s | ours / transformers (time) |",
             '|---|---|---|---|---|']
    for (s, t), r in results.items():
        lines.append(f"| {s} | {t} | {tokens / r['ours']:.0f} | {tokens / r['hf']:.0f} | {r['ours'] / r['hf']:.2f} |")
    if memory:
        lines += ['', '| setting | ours peak GiB | transformers peak GiB |', '|---|---|---|']
        lines += [f"| {s} | {m['ours']:.2f} | {m['hf']:.2f} |" for s, m in memory.items()]
    if counts:
        lines += ['', f"LoRA adapter parameters: ours {counts['ours']:,}, transformers {counts['hf']:,}"]
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default=MODEL, help='a .gguf file or a transformers folder (Llama, Qwen2, Qwen3)')
    p.add_argument('--threads', default='1,2', help='comma list of torch thread counts, each measured')
    p.add_argument('--steps', type=int, default=6, help='timed steps (rounds) per (setting, model), after one warm-up; '
                   'even, so that each model goes first as often')
    p.add_argument('--batch_size', type=int, default=2)
    p.add_argument('--block_size', type=int, default=512)
    p.add_argument('--settings', default=','.join(SETTINGS), help='comma list of settings: ' + ', '.join(SETTINGS))
    p.add_argument('--keep_freed_memory', type=int, default=1, help='1: glibc keeps freed memory, as train.py on CPU '
                   '(hardware.keep_freed_memory); 0: glibc\'s default')
    p.add_argument('--memory', type=int, default=1, help='1: also the peak memory (a process per setting and model)')
    p.add_argument('--_memory', default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not os.path.exists(os.path.expanduser(a.model)):
        raise SystemExit(f"No model at {a.model}: fetch it with python data/released.py smollm2-135m.")
    settings = a.settings.split(',')
    if any(s not in SETTINGS for s in settings):
        raise SystemExit(f"--settings: {a.settings!r} is not a comma list of {', '.join(SETTINGS)}.")
    if a._memory:
        if a.keep_freed_memory:
            hardware.keep_freed_memory()
        return _memory_child(a._memory, a.model, a.steps, a.batch_size, a.block_size)
    threads = [int(t) for t in a.threads.split(',')]
    print(f"{os.path.basename(a.model)}: one training step of {a.batch_size} x {a.block_size} tokens, float32, "
          f"median of {a.steps} interleaved rounds (each model first in half of them), glibc "
          f"{'keeping freed memory' if a.keep_freed_memory else 'default'}", flush=True)
    results, _, counts = timings(a.model, threads, a.steps, a.batch_size, a.block_size, settings, a.keep_freed_memory)
    memory = {s: {w: peak_memory(a.model, s, w, 2, a.batch_size, a.block_size, a.keep_freed_memory)
                  for w in ('ours', 'hf')} for s in settings} if a.memory else {}
    print(table(results, memory, counts, a.batch_size, a.block_size))


if __name__ == '__main__':
    main()
