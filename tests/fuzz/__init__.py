"""Fuzzed inputs (issue 34): damaged, mistyped and absurd volume files through the readers and the real CLIs."""
