"""Generation: sampling strategies and the compiled decoding loop."""
