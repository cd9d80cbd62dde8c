"""The launcher (outside), the container side (inside), and what they share."""
