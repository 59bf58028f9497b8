"""The student notebook: what it imports (``support``) and how the grader executes it (``runner``).

``runner`` is trusted (it drives a sandboxed kernel); ``support`` runs inside
the student's kernel.
"""
