"""The core: models, profiles, image sets, features, evaluation and report helpers.

Imports nothing from data, methods or studies."""
