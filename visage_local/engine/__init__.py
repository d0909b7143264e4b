"""llama.cpp at work: the engine's lifetime, weight refresh and batched greedy generation
(``llama``), batch sizes and memory (``batching``), coherence (``coherence``) and capability
(``capability``) measured in the same engine."""
