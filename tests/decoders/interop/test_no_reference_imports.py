"""The library reads weights without the implementations we compare against: no torch, transformers or gguf."""
import subprocess
import sys

from tests.conftest import REPO, subprocess_env

LOADS = """
import sys
from decoders import interop
from decoders.interop import gguf, hf
print(sorted(m for m in ("torch", "transformers", "gguf", "safetensors") if m in sys.modules))
"""


def test_decoders_interop_imports_no_reference_package():
  result = subprocess.run([sys.executable, "-c", LOADS], cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"
