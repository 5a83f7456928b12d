// Signature-only stub of androidx.test.platform.app.InstrumentationRegistry (androidx.test:monitor).
// Used only to type-check generated instrumented tests: public declarations match the library, every body throws.

package androidx.test.platform.app;

import android.app.Instrumentation;
import android.os.Bundle;

public final class InstrumentationRegistry {

  public static Instrumentation getInstrumentation() {
    throw new UnsupportedOperationException("signature-only stub");
  }

  public static Bundle getArguments() {
    throw new UnsupportedOperationException("signature-only stub");
  }

  public static void registerInstance(Instrumentation instrumentation, Bundle arguments) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  private InstrumentationRegistry() {}
}
