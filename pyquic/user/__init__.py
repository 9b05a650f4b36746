"""pyquic.user."""
