"""builder stage."""
