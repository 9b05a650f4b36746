"""pyquic.engine."""
