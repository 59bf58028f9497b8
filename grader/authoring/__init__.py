"""Instructors' tools: the stub generator, the release, the demo and its example class."""
