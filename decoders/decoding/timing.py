"""Compile time apart from run time: what a generation call spent in XLA's compiler, and what it ran.

    with timing.Stopwatch() as clock:
      out = generate(model, params, prompts, strategy=..., max_new_tokens=256)
    clock.compile_seconds, clock.run_seconds, clock.compilations

The first call of a jitted loop traces and compiles it, then runs it; a second call with
the same shapes and settings only runs (jax.jit's cache). Tokens/s must count the run
alone, so the stopwatch listens to JAX's own compile events (jax.monitoring) instead of
guessing which call compiled.
"""
import dataclasses
import threading
import time

import jax

# JAX's events for the stages of compiling a jitted function (jax/_src/dispatch.py): tracing to a
# jaxpr, lowering it to StableHLO, and XLA's compilation, which happens once per new program.
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration", _BACKEND_COMPILE
)
_running: list["Stopwatch"] = []
_lock = threading.Lock()


def _on_event(event: str, seconds: float, **_) -> None:
  if event in _COMPILE_EVENTS:
    with _lock:
      for stopwatch in _running:
        stopwatch.compile_seconds += seconds
        stopwatch.compilations += event == _BACKEND_COMPILE


jax.monitoring.register_event_duration_secs_listener(_on_event)


@dataclasses.dataclass
class Stopwatch:
  """Wall-clock seconds of a `with` block, split into tracing + compiling and the rest (running)."""

  compile_seconds: float = 0.0
  compilations: int = 0  # XLA compilations inside the block: 0 on a call whose program was cached
  total_seconds: float = 0.0

  @property
  def run_seconds(self) -> float:
    return max(self.total_seconds - self.compile_seconds, 0.0)

  def __enter__(self) -> "Stopwatch":
    self._start = time.perf_counter()
    with _lock:
      _running.append(self)
    return self

  def __exit__(self, *exc) -> None:
    with _lock:
      _running.remove(self)
    self.total_seconds = time.perf_counter() - self._start
