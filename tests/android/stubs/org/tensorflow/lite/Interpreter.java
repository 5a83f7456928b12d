// Signature-only stub of LiteRT 2.3.0's Interpreter (com.google.ai.edge.litert:litert), from
// litert/kotlin/src/copied_from_tflite/java/org/tensorflow/lite/Interpreter.java (google-ai-edge/LiteRT). The real
// class extends the package-private InterpreterImpl, whose public methods are declared here instead. Only what
// generated code uses. Used only to type-check generated code: public declarations match the source, every body
// throws.

package org.tensorflow.lite;

import java.io.File;
import java.nio.ByteBuffer;
import java.util.Map;

public final class Interpreter implements InterpreterApi {

  /** An options class for controlling runtime interpreter behavior. */
  public static class Options extends InterpreterApi.Options {
    public Options() {}

    public Options(InterpreterApi.Options options) {
      throw new UnsupportedOperationException("signature-only stub");
    }

    @Override
    public Options setUseXNNPACK(boolean useXNNPACK) {
      throw new UnsupportedOperationException("signature-only stub");
    }

    @Override
    public Options setNumThreads(int numThreads) {
      throw new UnsupportedOperationException("signature-only stub");
    }

    @Override
    public Options setCancellable(boolean allow) {
      throw new UnsupportedOperationException("signature-only stub");
    }
  }

  public Interpreter(File modelFile) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  public Interpreter(File modelFile, Options options) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  public Interpreter(ByteBuffer byteBuffer) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  public Interpreter(ByteBuffer byteBuffer, Options options) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public void run(Object input, Object output) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public void runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String signatureKey) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public void runSignature(Map<String, Object> inputs, Map<String, Object> outputs) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public String[] getSignatureKeys() {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public String[] getSignatureInputs(String signatureKey) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public String[] getSignatureOutputs(String signatureKey) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public void close() {
    throw new UnsupportedOperationException("signature-only stub");
  }
}
