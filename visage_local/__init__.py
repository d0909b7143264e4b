"""visage-local: safety landscapes of quantized LLMs on a laptop, with llama.cpp."""

__version__ = "0.1.0"
