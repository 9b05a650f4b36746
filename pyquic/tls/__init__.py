"""pyquic.tls."""
