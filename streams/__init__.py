"""The Faust app that keeps user interest profiles (see streams/app.py)."""
