// Signature-only stub of androidx.test.ext.junit.runners.AndroidJUnit4 (androidx.test.ext:junit).
// Used only to type-check generated instrumented tests: public declarations match the library, every body throws.

package androidx.test.ext.junit.runners;

import org.junit.runner.Description;
import org.junit.runner.Runner;
import org.junit.runner.manipulation.Filter;
import org.junit.runner.manipulation.Filterable;
import org.junit.runner.manipulation.NoTestsRemainException;
import org.junit.runner.manipulation.Sortable;
import org.junit.runner.manipulation.Sorter;
import org.junit.runner.notification.RunNotifier;
import org.junit.runners.model.InitializationError;

public final class AndroidJUnit4 extends Runner implements Filterable, Sortable {

  public AndroidJUnit4(Class<?> klass) throws InitializationError {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public Description getDescription() {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public void run(RunNotifier runNotifier) {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public void filter(Filter filter) throws NoTestsRemainException {
    throw new UnsupportedOperationException("signature-only stub");
  }

  @Override
  public void sort(Sorter sorter) {
    throw new UnsupportedOperationException("signature-only stub");
  }
}
