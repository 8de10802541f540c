"""The ranker that consumes mmfeat's features, and the offline evaluation that measures what they add."""
