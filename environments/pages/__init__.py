"""The pages, one module per page (and what it posts to); the JSON API is api.py."""
