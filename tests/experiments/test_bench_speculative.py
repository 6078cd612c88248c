"""The speculative-decoding benchmark on a tiny random model: its rows, its estimate, and tokens equal to greedy's."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders.errors import ConfigError
from decoders.models import decoder_lm
from experiments.bench import speculative

NEW_TOKENS = 6
VOCAB = 37


def tiny():
  cfg = decoder_lm.preset("llama", vocab_size=VOCAB, num_layers=2, width=32, num_heads=4, mlp_dim=64, max_len=32)
  model = decoder_lm.DecoderLM(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, jax.tree.map(lambda x: x * 8.0, params)  # greedy choices well above rounding level


def full_forward_greedy(model, params, prompt, new_tokens):
  """The reference: each token the argmax of a full forward pass over everything so far, no cache (causal, so the
  zeros padding the window to one compiled shape never reach the position read)."""
  forward = jax.jit(lambda window: model.apply({"params": params}, window))
  tokens = list(prompt)
  for _ in range(new_tokens):
    window = jnp.zeros((1, model.config.max_len), jnp.int32).at[0, : len(tokens)].set(jnp.array(tokens))
    tokens.append(int(jnp.argmax(forward(window)[0, len(tokens) - 1, :VOCAB])))
  return tokens[len(prompt):]


PROMPTS = [[3, 4, 5, 6, 3, 4, 5, 6, 3, 4], [7, 1, 9, 2, 8, 7, 1, 9]]  # repeating: prompt lookup finds matches


def test_the_target_alone_and_every_run_give_the_full_forward_passes_greedy_tokens():
  model, params = tiny()
  alone = speculative.target_alone(model, params, PROMPTS, NEW_TOKENS, repeats=1)
  assert alone.output == [full_forward_greedy(model, params, p, NEW_TOKENS) for p in PROMPTS]
  assert alone.seconds > 0 and alone.compile_seconds > 0
  costs = {1: 1.0, 3: 1.5, 5: 2.0, "exit1": 0.25}
  lookup, exit1 = speculative.parse_runs(["lookup:copy", "exit1:chat"], num_layers=2)
  rows = speculative.speculative_rows(lookup, model, params, PROMPTS, [4], NEW_TOKENS, 1, alone, costs)
  rows += speculative.speculative_rows(exit1, model, params, PROMPTS, [2], NEW_TOKENS, 1, alone, costs)
  assert [(r["draft"], r["γ"], r["same tokens"]) for r in rows] == [("lookup", "4", "yes"), ("exit1", "2", "yes")]
  for row in rows:
    calls = int(row["target calls"])
    assert NEW_TOKENS / (int(row["γ"]) + 1) <= calls <= NEW_TOKENS
    assert 0 <= float(row["acceptance"].rstrip("%")) <= 100 and float(row["speedup"].rstrip("x")) > 0
  lookup_4 = rows[0]  # no draft cost: (6 / calls) x 1.0 / 2.0
  assert lookup_4["estimate"] == f"{NEW_TOKENS / int(lookup_4['target calls']) / 2.0:.2f}x"
  lines = speculative.table([speculative.alone_row("copy", 2, NEW_TOKENS, alone), *rows])
  assert lines[0].startswith("| draft | prompts | batch | γ | tokens/s | speedup |") and len(lines) == 2 + 1 + len(rows)
  assert lines[2].startswith("| none (target alone) | copy | 2 |  |")


def test_a_run_whose_tokens_differ_from_the_target_alone_says_no():
  model, params = tiny()
  alone = speculative.target_alone(model, params, PROMPTS[:1], NEW_TOKENS, repeats=1)
  wrong = speculative.Timed(alone.compile_seconds, alone.seconds, [[(t + 1) % VOCAB for t in alone.output[0]]])
  run = speculative.Run("lookup", "copy")
  [row] = speculative.speculative_rows(run, model, params, PROMPTS[:1], [2], NEW_TOKENS, 1, wrong)
  assert row["same tokens"].startswith("NO") and row["estimate"] == ""


def test_the_estimate_divides_tokens_per_round_by_a_rounds_cost():
  costs = {1: 1.0, 5: 2.0, "exit1": 0.25}
  # 8 tokens in 2 rounds, each costing one [b, 5] call (2.0) + 4 draft calls (1.0): 4 tokens per 3 token-costs.
  assert speculative.estimate(costs, speculative.Run("exit1", "chat"), 4, 8, 2) == pytest.approx(4 / 3)
  assert speculative.estimate(costs, speculative.Run("lookup", "copy"), 4, 8, 2) == pytest.approx(2.0)


def test_per_call_costs_are_measured_for_every_width_and_draft():
  model, params = tiny()
  costs = speculative.call_costs(model, params, 2, 8, [2], {"exit1": 1}, repeats=1)
  assert set(costs) == {1, 3, "exit1"} and all(seconds > 0 for seconds in costs.values())
  [line] = speculative.cost_lines(2, 8, costs)
  assert line.startswith("per-call cost at batch 2, 8-token context: target [2, 1] ") and "exit1 on [2, 1]" in line


@pytest.mark.parametrize("spec", ["exit2:chat", "exit0:copy", "beam:copy", "lookup:poems", "lookup"])
def test_an_impossible_run_is_a_config_error_naming_it(spec):
  with pytest.raises(ConfigError, match=spec):
    speculative.parse_runs([spec], num_layers=2)


def test_bad_list_flags_are_config_errors():
  assert speculative.positive_ints("speculative_batches", ["1", "4"], most=4) == [1, 4]
  for values in (["0"], ["5"], ["two"], []):
    with pytest.raises(ConfigError, match="speculative_batches"):
      speculative.positive_ints("speculative_batches", values, most=4)


class CharTokenizer:
  """Stands in for the GGUF tokenizer: one id per character, the chat template as plain text."""

  def encode(self, text):
    return [ord(c) for c in text]

  def apply_chat_template(self, messages):
    return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def test_a_copy_prompt_asks_for_the_passage_and_begins_the_answer_with_its_first_line():
  passage = "MACBETH:\nSo foul and fair a day I have not seen, not here.\nBANQUO:\nHow far is't call'd to Forres?\n"
  [prompt] = speculative.copy_prompts(CharTokenizer(), [passage])
  text = "".join(map(chr, prompt))
  assert text.startswith("<user>Repeat the following passage exactly:\n\n" + passage)
  assert text.endswith("<assistant>MACBETH:\nSo foul and fair a day I have not seen, not here.\n")
  assert np.all(np.array(prompt) > 0)
