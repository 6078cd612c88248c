"""The translation-quality section of REPRODUCTIONS.md: each family's best full en→de run, and the claims on them."""
from experiments.reproductions import quality


def _document(name, base, runs, quick=False, pair="libreoffice_en_de"):
  config = {"task": "translation", "data": {"name": pair}, "model": base}
  return {"name": name, "quick": quick, "base_config": config, "runs": runs}


def _run(name, bleu, overrides=None, by_length=(30, 25, 20, 10), steps=100):
  buckets = {f"bleu_words_{low}_{low + 9}": value for low, value in zip(range(0, 100, 10), by_length)}
  metrics = {"bleu": bleu, "chrf": 50.0, "wall_seconds": 61.0, **buckets}
  return {"name": name, "overrides": overrides or {}, "steps": steps, "metrics": metrics, "machine": "cpu"}


RNN = {"architecture": "rnn", "attention": "additive"}
TRANSFORMER = {"architecture": "transformer"}


def test_each_family_keeps_its_best_full_en_de_run():
  documents = [
      _document("bahdanau2015", RNN, [_run("fixed", 12.0, {"model.attention": "none"}, (20, 12, 4, 2)),
                                      _run("additive", 30.0)]),
      _document("luong2015", RNN, [_run("dot", 31.5, {"model.attention": "dot"}, steps=200)]),
      _document("beam_search", TRANSFORMER, [_run("base", 28.0)]),
      _document("vaswani2017", TRANSFORMER, [_run("base", 99.0)], quick=True),  # quick: never the best
      _document("bible", TRANSFORMER, [_run("base", 99.0)], pair="bible_en_es"),  # another pair
  ]
  best = {run["name"]: run for run in quality.best_runs(documents)}
  assert list(best) == [quality.FIXED_CONTEXT, quality.ATTENTION_RNN, quality.TRANSFORMER]
  assert best[quality.ATTENTION_RNN]["source"] == "luong2015 / dot" and best[quality.ATTENTION_RNN]["steps"] == 200
  assert best[quality.TRANSFORMER]["metrics"]["bleu"] == 28.0
  assert best[quality.FIXED_CONTEXT]["metrics"]["bleu_long"] == 3.0  # buckets 20-29 and 30-39: (4 + 2) / 2

  text = quality.section(documents)
  transformer_claim, long_claim = [line for line in text.splitlines() if "**" in line]  # the verdicts, in order
  assert "Transformer 28.00 against RNN + attention 31.50 (-3.50; higher means by more than 0.5) | **does not agree**" in transformer_claim
  assert "RNN + attention 15.00 against RNN, fixed context 3.00 (+12.00; higher means by more than 0.5) | **agrees**" in long_claim
  assert "| Transformer | 28.00 | 50.00 | 15.00 | `beam_search / base` | 100 | 1 min 01 s | cpu |" in text


def test_without_full_translation_runs_the_claims_are_not_run_yet():
  text = quality.section([_document("beam_search", TRANSFORMER, [_run("base", 28.0)], quick=True)])
  assert text.count("not run yet") == len(quality.CLAIMS) and "| family |" not in text
