"""pyquic: QUIC sockets for Python, on the in-kernel QUIC module or in pure Python."""
