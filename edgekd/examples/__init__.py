"""Built-in example projects (download nothing)."""
