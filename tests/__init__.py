"""slmpack tests. A package, so `tests.*` imports resolve here and not to a `tests` package some
dependency installs into site-packages (xdsl does)."""
