"""TRUSTED side: a whole class at once: discovery, archives, parallel grading, similarity."""
