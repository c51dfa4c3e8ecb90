"""One module per family of ``hopflow`` commands; ``engine.cli`` imports them on demand."""
