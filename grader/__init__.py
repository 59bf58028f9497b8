"""capgrade: the autograder package."""
