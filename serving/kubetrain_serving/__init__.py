"""kubetrain component package."""
