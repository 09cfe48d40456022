"""Datasets: the generated world, the memes, the full profile's real datasets, the registry."""
