"""Where courses grade: the Gradescope bundle and GitHub Classroom."""
