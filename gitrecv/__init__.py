"""gitrecv stage."""
