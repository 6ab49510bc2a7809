"""Test-only helpers: real servers, generated models, videos and the table of bad inputs."""
