"""The ``pyquic`` command-line tools: one module per command (see ``pyquic.__main__``)."""
