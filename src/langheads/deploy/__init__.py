"""`langheads export`: write a model folder as GGUF for llama.cpp (tensors, metadata and the
tokenizer's vocabulary), quantize through llama.cpp's own quantizer, check the gap."""
