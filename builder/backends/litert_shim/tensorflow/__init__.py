"""Only the TFLite flatbuffer schema of TensorFlow, served by ai_edge_litert (see ../README.md)."""
