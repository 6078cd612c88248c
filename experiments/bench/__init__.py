"""Benchmarks, each measured in one run so its ratio survives a noisy, shared machine.

    python -m experiments.bench <name> [flags] [--record]

Each benchmark is a module here with a `run() -> list[str]` that prints nothing itself:
`__main__` prints the lines and, with `--record`, appends them to BENCHMARKS.md under
the command that produced them. Shared measurements (the matmul peak we divide by,
the machine's description) live in `common.py`.
"""
