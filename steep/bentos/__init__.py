"""BentoML services and their build configs."""
