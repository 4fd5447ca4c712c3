"""Stage II: readouts from cached features to every target, first and higher order."""
