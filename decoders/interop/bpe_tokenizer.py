"""The byte-level BPE tokenizer stored in a GGUF file's metadata, rebuilt with Hugging Face `tokenizers`.

A GGUF file with tokenizer.ggml.model == "gpt2" carries GPT-2-style byte-level BPE: tokens are strings over GPT-2's
256-character byte alphabet (space is "Ġ"), merges are "left right" strings in priority order, and
tokenizer.ggml.pre names llama.cpp's pre-tokenizer (the regexes that split text into words before BPE; see
llama-vocab.cpp). Control (3) and user-defined (4) tokens are matched whole in the text and stored as plain text,
as llama.cpp's convert_hf_to_gguf.py writes them. The chat template is rendered as transformers does.
"""
import json

import jinja2
import jinja2.sandbox
import numpy as np
import tokenizers
from tokenizers import models, pre_tokenizers

from decoders.errors import WeightsError

_CONTROL, _USER_DEFINED = 3, 4  # llama_token_type in llama.h


def _gpt2_pre_tokenizer():
  return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2_pre_tokenizer():  # llama.cpp: regex "\p{N}" (each digit alone), then GPT-2's regex
  return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _gpt2_pre_tokenizer()])


# tokenizer.ggml.pre -> pre-tokenizer; names grouped as llama-vocab.cpp groups them under one regex set.
# llama.cpp's "default" is not GPT-2's regex (it also splits punctuation runs and 3-digit groups), so it is refused.
_PRE_TOKENIZERS = {
    "gpt2": _gpt2_pre_tokenizer,
    "mpt": _gpt2_pre_tokenizer,
    "olmo": _gpt2_pre_tokenizer,
    "smollm": _digits_then_gpt2_pre_tokenizer,
    "starcoder": _digits_then_gpt2_pre_tokenizer,
    "refact": _digits_then_gpt2_pre_tokenizer,
}


def _byte_level_alphabet():
  """GPT-2's bytes_to_unicode, inverted: printable latin-1 bytes stand for themselves, the rest for chr(256 + n)."""
  printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
  byte_of_char, shifted = {}, 0
  for byte in range(256):
    if byte in printable:
      byte_of_char[chr(byte)] = byte
    else:
      byte_of_char[chr(256 + shifted)] = byte
      shifted += 1
  return byte_of_char


def _chat_environment(source):
  def raise_exception(message):  # called by templates that check the conversation (as in transformers)
    raise ValueError(f"chat template of {source}: {message}")

  env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  env.globals["raise_exception"] = raise_exception
  # transformers' tojson: plain json.dumps, without jinja2's HTML escaping.
  env.filters["tojson"] = lambda value, indent=None, ensure_ascii=False: json.dumps(
      value, indent=indent, ensure_ascii=ensure_ascii
  )
  return env


class BPETokenizer:
  """Encodes text to token ids and back, and renders chat prompts, from a GGUF file's tokenizer.* metadata."""

  def __init__(self, tokenizer, tokens, special_ids, bos_id, eos_id, add_bos, add_eos, chat_template, source):
    self._tokenizer, self._tokens, self._special_ids = tokenizer, tokens, special_ids
    self.vocab_size, self.bos_id, self.eos_id = len(tokens), bos_id, eos_id
    self._add_bos, self._add_eos, self._chat_template, self._source = add_bos, add_eos, chat_template, source
    self._character_counts = None

  @classmethod
  def from_gguf_metadata(cls, metadata: dict, source: str = "") -> "BPETokenizer":
    source = source or "the GGUF metadata"

    def require(key):
      if key not in metadata:
        raise WeightsError(f"{source} has no {key}")
      return metadata[key]

    model = require("tokenizer.ggml.model")
    if model != "gpt2":
      raise WeightsError(f"{source} has tokenizer.ggml.model {model!r}; supported: 'gpt2' (byte-level BPE)")
    pre = metadata.get("tokenizer.ggml.pre", "gpt2")
    if pre not in _PRE_TOKENIZERS:
      raise WeightsError(f"{source} has tokenizer.ggml.pre {pre!r}; supported: {', '.join(map(repr, _PRE_TOKENIZERS))}")
    tokens = list(require("tokenizer.ggml.tokens"))
    token_types = metadata.get("tokenizer.ggml.token_type", np.ones(len(tokens), np.int32))
    if len(token_types) != len(tokens):
      raise WeightsError(f"{source} has {len(tokens)} tokens but {len(token_types)} token types")
    merges = []
    for merge in require("tokenizer.ggml.merges"):
      space = merge.find(" ", 1)  # as llama.cpp: the separator is the first space after the first character
      if space < 0:
        raise WeightsError(f"{source} has tokenizer.ggml.merges entry {merge!r}, not 'left right'")
      merges.append((merge[:space], merge[space + 1:]))
    bos_id, eos_id = (_token_id(metadata, f"tokenizer.ggml.{k}_token_id", len(tokens), source) for k in ("bos", "eos"))
    add_bos, add_eos = (bool(metadata.get(f"tokenizer.ggml.add_{k}_token", False)) for k in ("bos", "eos"))
    for add, key, token_id in ((add_bos, "bos", bos_id), (add_eos, "eos", eos_id)):
      if add and token_id is None:
        raise WeightsError(f"{source} sets tokenizer.ggml.add_{key}_token but has no tokenizer.ggml.{key}_token_id")

    vocab = {}
    for token_id, token in enumerate(tokens):
      vocab.setdefault(token, token_id)  # a duplicated token string keeps its first id
    special_ids = [i for i, t in enumerate(token_types) if int(t) in (_CONTROL, _USER_DEFINED)]
    try:
      tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
    except Exception as error:  # tokenizers raises a bare Exception for e.g. a merge of unknown tokens
      raise WeightsError(f"{source} has a BPE vocabulary that tokenizers refuses: {error}") from None
    tokenizer.pre_tokenizer = _PRE_TOKENIZERS[pre]()
    tokenizer.decoder = tokenizers.decoders.ByteLevel()  # not our `decoders` package
    tokenizer.add_special_tokens([tokenizers.AddedToken(tokens[i], special=True, normalized=False)
                                  for i in special_ids])

    chat_template = metadata.get("tokenizer.chat_template")
    if chat_template is not None:
      try:
        chat_template = _chat_environment(source).from_string(chat_template)
      except jinja2.TemplateSyntaxError as error:
        raise WeightsError(f"{source} has a tokenizer.chat_template that does not parse: {error}") from None
    return cls(tokenizer, tokens, frozenset(special_ids), bos_id, eos_id, add_bos, add_eos, chat_template, source)

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`; control tokens written in the text ("<|im_start|>") become their ids. BOS (EOS) is
    added only if the file sets tokenizer.ggml.add_bos_token (add_eos_token)."""
    ids = self._tokenizer.encode(text, add_special_tokens=False).ids
    return [self.bos_id] * self._add_bos + ids + [self.eos_id] * self._add_eos

  def decode(self, ids) -> str:
    """The text of `ids`; control tokens are kept, as their text ("<|im_end|>"). Invalid UTF-8 becomes U+FFFD."""
    return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

  def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The file's Jinja chat template rendered for `messages` (dicts with "role" and "content")."""
    if self._chat_template is None:
      raise WeightsError(f"{self._source} has no tokenizer.chat_template")
    return self._chat_template.render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token="" if self.bos_id is None else self._tokens[self.bos_id],
        eos_token="" if self.eos_id is None else self._tokens[self.eos_id],
    )

  def character_counts(self) -> np.ndarray:
    """int32 [vocab_size]: how many characters each token adds to `decode`'s text.

    For an ordinary token, the number of UTF-8 lead bytes among its bytes (a token may end inside a character, whose
    continuation bytes then count 0 in the next token), so that sum(counts[encode(text)]) == len(text). A control or
    user-defined token counts the length of its text, since decode keeps it.
    """
    if self._character_counts is None:
      byte_of_char = _byte_level_alphabet()
      counts = np.empty(self.vocab_size, np.int32)
      for token_id, token in enumerate(self._tokens):
        if token_id in self._special_ids:
          counts[token_id] = len(token)
        elif all(char in byte_of_char for char in token):
          counts[token_id] = sum((byte_of_char[char] & 0xC0) != 0x80 for char in token)
        else:  # outside the byte alphabet: the ByteLevel decoder passes the token through as its UTF-8 text
          counts[token_id] = len(token)
      self._character_counts = counts
    return self._character_counts.copy()


def _token_id(metadata, key, vocab_size, source):
  token_id = metadata.get(key)
  if token_id is not None and not 0 <= int(token_id) < vocab_size:
    raise WeightsError(f"{source} has {key} {token_id}, outside the vocabulary of {vocab_size}")
  return None if token_id is None else int(token_id)
