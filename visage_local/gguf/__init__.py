"""GGUF files and ggml's numbers: the header read lazily (``header``), a model's tensors read
on demand and its scratch copy (``model``), ggml's quantisation kernels inside
llama-cpp-python (``ggml``), one tensor dequantised and requantised (``quant``)."""
