"""Stage I and the feature cache: task-specific networks, then frozen encoders dumped once into features.zarr."""
