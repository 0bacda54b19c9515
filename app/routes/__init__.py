"""Route modules, one per resource; each defines ``router``."""
