"""Where models come from: the registry of named models and their downloads (``registry``),
and the stores other tools keep: Ollama, the Hugging Face cache, LM Studio (``stores``)."""
