// Signature-only stub of LiteRT 2.3.0's Interpreter API (com.google.ai.edge.litert:litert), which ships TFLite's
// Java Interpreter copied into litert/kotlin/src/copied_from_tflite/java/org/tensorflow/lite/InterpreterApi.java
// (google-ai-edge/LiteRT; the v2 packages drop delegates). Only what generated code uses. Used only to type-check
// generated code: public declarations match the source, every body throws.

package org.tensorflow.lite;

import java.util.Map;

public interface InterpreterApi extends AutoCloseable {

  /** An options class for controlling runtime interpreter behavior. */
  class Options {
    public Options() {}

    public Options(Options other) {
      throw new UnsupportedOperationException("signature-only stub");
    }

    public Options setNumThreads(int numThreads) {
      throw new UnsupportedOperationException("signature-only stub");
    }

    public int getNumThreads() {
      throw new UnsupportedOperationException("signature-only stub");
    }

    public Options setCancellable(boolean allow) {
      throw new UnsupportedOperationException("signature-only stub");
    }

    public Options setUseXNNPACK(boolean useXNNPACK) {
      throw new UnsupportedOperationException("signature-only stub");
    }

    public boolean getUseXNNPACK() {
      throw new UnsupportedOperationException("signature-only stub");
    }
  }

  void run(Object input, Object output);

  void runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String signatureKey);

  void runSignature(Map<String, Object> inputs, Map<String, Object> outputs);

  String[] getSignatureKeys();

  String[] getSignatureInputs(String signatureKey);

  String[] getSignatureOutputs(String signatureKey);

  @Override
  void close();
}
