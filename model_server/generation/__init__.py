"""Generation: text planning, the engine and its decoders, the schedulers, voices, audio encoding."""
