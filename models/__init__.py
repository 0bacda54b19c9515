"""Model references: loading user-supplied models safely and the models bundled with the repo."""
