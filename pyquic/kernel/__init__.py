"""pyquic.kernel."""
