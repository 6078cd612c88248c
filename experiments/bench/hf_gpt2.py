"""Our GPT-2 train step beside Hugging Face `transformers`' PyTorch GPT2LMHeadModel, on this CPU.

    make bench-hf       # installs the reference extra (torch, transformers) into .venv, then runs:
    python -m experiments.bench hf_gpt2 [--hf_steps=10] [--hf_variants=bf16,remat,scan] [--record]

One run measures, in turn: this machine's f32 matmul peak; our train step on
configs/gpt2_bench.py (6 layers, width 384, 6 heads, MLP 1536, 8,192-token vocabulary,
8 x 256 tokens, AdamW, f32) and Hugging Face's model of the same shape, trained by
torch.optim.AdamW with the same clipping on a fixed batch of random token ids, timed in
alternation; ours in bfloat16, with remat and with the layers in a scan; the peak again.
Both MFUs use the same model FLOPs per token (DecoderLMConfig.flops_per_token), so their
ratio is the ratio of tokens/s. torch and transformers are the `reference` extra
(requirements-reference.txt), which decoders/ never needs.
"""
import os

from absl import flags

from experiments.bench import common
from experiments.bench.train import train_throughput

_STEPS = flags.DEFINE_integer("hf_steps", 10, "Timed training steps per model (after 3 warm-up steps).")
_ROUNDS = flags.DEFINE_integer(
    "hf_rounds", 2, "Alternating timings of our f32 step and Hugging Face's; the fastest of each is kept."
)
_VARIANTS = flags.DEFINE_list(
    "hf_variants", ["bf16", "remat", "scan"], "Our variants timed besides f32: any of bf16, remat, scan."
)

# Each variant of our step: the config.model fields it changes from configs/gpt2_bench.py.
VARIANTS = {"bf16": {"dtype": "bfloat16"}, "remat": {"remat": "full"}, "scan": {"scan_layers": True}}


def _import_reference():
  """torch and transformers, or a one-line SystemExit naming the missing one and how to install it."""
  try:
    import torch
    import transformers
  except ImportError as error:
    raise SystemExit(
        f"hf_gpt2 needs {error.name}, of the reference extra (requirements-reference.txt): "
        "`make bench-hf` installs it into .venv and runs this benchmark"
    ) from None
  return torch, transformers


def hf_train_throughput(model_config, batch_size: int, context: int, optimizer_config, steps: int) -> dict:
  """Median step time of transformers' GPT2LMHeadModel of `model_config`'s shape, trained in f32."""
  torch, transformers = _import_reference()
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(
      transformers.GPT2Config(
          vocab_size=model_config.padded_vocab_size,
          n_positions=model_config.max_len,
          n_embd=model_config.width,
          n_layer=model_config.num_layers,
          n_head=model_config.num_heads,
          n_inner=model_config.mlp_dim,
          activation_function="gelu_new",  # the tanh approximation, as model.activation="gelu_tanh"
          layer_norm_epsilon=model_config.norm_epsilon,
          resid_pdrop=0.0,
          embd_pdrop=0.0,
          attn_pdrop=0.0,
          bos_token_id=None,  # GPT-2's 50256 is not in a smaller vocabulary; no generation here
          eos_token_id=None,
      )
  )
  model.train()
  optimizer = torch.optim.AdamW(
      model.parameters(),
      lr=optimizer_config.learning_rate,
      betas=(optimizer_config.b1, optimizer_config.b2),
      eps=optimizer_config.eps,
      weight_decay=optimizer_config.weight_decay,
  )
  tokens = torch.randint(0, model_config.vocab_size, (batch_size, context + 1))
  inputs, targets = tokens[:, :-1], tokens[:, 1:]

  def step():
    optimizer.zero_grad(set_to_none=True)
    logits = model(input_ids=inputs).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), optimizer_config.clip_norm)
    optimizer.step()

  for _ in range(3):
    step()
  step_time = common.timed(step, repeats=steps)
  return {
      "step_seconds": step_time,
      "tokens_per_second": batch_size * context / step_time,
      "parameters": sum(p.numel() for p in model.parameters()),
      "attention": model.config._attn_implementation,
      "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
  }


def run() -> list[str]:
  from configs import gpt2_bench
  from experiments.tasks.language_model import model_config

  _import_reference()  # before minutes of our own measurements
  unknown = sorted(set(_VARIANTS.value) - set(VARIANTS))
  if unknown:
    raise SystemExit(f"--hf_variants={','.join(_VARIANTS.value)}: unknown {unknown}; expected some of {sorted(VARIANTS)}")
  config = gpt2_bench.get_config()
  model = model_config(config, data_vocab_size=1)
  context, batch = config.data.context_length, config.data.batch_size
  flops_per_token = model.flops_per_token(context)

  peak = common.matmul_peak()
  # On a shared 2-core machine a neighbour's burst can double a 2-thread step for a minute:
  # timing the two in alternation and keeping the fastest of each compares like with like.
  f32_runs, hf_runs = [], []
  for _ in range(_ROUNDS.value):
    f32_runs.append(train_throughput(config, _STEPS.value))
    hf_runs.append(hf_train_throughput(model, batch, context, config.optimizer, _STEPS.value))
  ours = {"f32": min(f32_runs, key=lambda result: result["step_seconds"])}
  hf = min(hf_runs, key=lambda result: result["step_seconds"])
  for name in _VARIANTS.value:
    variant = gpt2_bench.get_config()
    variant.model.update(VARIANTS[name])
    ours[name] = train_throughput(variant, _STEPS.value)
  peak = max(peak, common.matmul_peak())  # bracket the run: noise shows as a gap

  def figures(step_seconds, tokens_per_second):
    mfu = flops_per_token * tokens_per_second / peak
    return f"{step_seconds * 1e3:.0f} ms/step, {tokens_per_second:,.0f} tokens/s, MFU {mfu:.1%}"

  lines = [
      f"GPT-2, {model.num_layers} layers, width {model.width}, {model.num_heads} heads, MLP {model.mlp_dim}, "
      f"vocabulary {model.padded_vocab_size}, batch {batch} x {context} tokens, AdamW; "
      f"{flops_per_token / 1e6:.1f} M model FLOPs/token; parameters: ours {model.num_params(include_embeddings=True):,}, "
      f"Hugging Face {hf['parameters']:,}",
      f"f32 matmul peak (2048^3, median, max of before/after): {peak / 1e9:.0f} GFLOP/s",
  ]
  for name, result in ours.items():
    lines.append(f"ours, {name} (attention={model.attention}): {figures(result['step_seconds'], result['units_per_second'])}")
  lines.append(
      f"Hugging Face GPT2LMHeadModel, f32 ({hf['versions']}, attention={hf['attention']}, "
      f"{os.cpu_count()} threads): {figures(hf['step_seconds'], hf['tokens_per_second'])}"
  )
  def milliseconds(runs):
    return ", ".join(f"{run['step_seconds'] * 1e3:.0f}" for run in runs) + " ms"

  lines.append(
      f"ours / Hugging Face, f32 tokens/s: {ours['f32']['units_per_second'] / hf['tokens_per_second']:.2f}x "
      f"(the fastest of {_ROUNDS.value} alternating timings each: ours {milliseconds(f32_runs)}, "
      f"theirs {milliseconds(hf_runs)})"
  )
  return lines + [common.peak_memory_line()]
