"""Side-by-side benchmarks of pyrogen against reference implementations (see README.md)."""
